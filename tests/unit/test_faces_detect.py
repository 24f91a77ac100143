"""OpenCV's Haar cascade, kept as the benchmarks' baseline detector."""


def test_detection_from_eight_threads_matches_one(faces_data):
    """OpenCV's cascade is not thread-safe: one classifier shared by
    threads segfaults.  Run in a child so that a crash fails this test
    instead of the suite."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import pathlib, sys
        from concurrent.futures import ThreadPoolExecutor
        from mlstorlets.sandbox.faces.detect import detect_faces
        from mlstorlets.sandbox.faces.image import decode_image
        photos = sorted(pathlib.Path(sys.argv[1]).glob('*/*.jpeg'))
        grays = [decode_image(p.read_bytes(), p.name) for p in photos]
        alone = [sorted(detect_faces(g).tolist()) for g in grays]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda g: sorted(detect_faces(g).tolist()), grays))
        assert together == alone, 'threads found other faces'
        print(len(grays))
    """)
    done = subprocess.run(
        [sys.executable, "-c", code, str(faces_data)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert int(done.stdout) > 50
