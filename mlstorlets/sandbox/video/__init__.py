"""Video as frame objects and back: what the rotoscope storlets compute.

``frames`` turns a video file into frames (a tar that Swift's bulk
extraction makes into objects), ``avi`` writes and reads Motion JPEG AVI
without decoding a frame, ``filters`` holds the per-frame stylisations and
``tasks`` the storlets' compute functions.
"""
