"""An extraction writes only the member names it would not store literally.

``X-Mlstorlets-Extract: tar`` turns a storlet's tar output into objects
(mlstorlets.server.middleware.storlet_copy).  The tar is the storlet's, so
the hostile storlet names members ``../../escaped.txt`` and ``a/../b.txt``,
which Swift's bulk extraction would store under those very names.
"""

import http.client
import json
import urllib.parse

from mlstorlets.sandbox import protocol


def test_an_extraction_refuses_member_names_it_would_store_literally(conn, container):
    conn.put_object(container, "source.txt", b"hello")
    url, token = conn.get_auth()
    parsed = urllib.parse.urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    try:
        connection.request(
            "PUT",
            "%s/%s/out" % (parsed.path, container),
            headers={
                "X-Auth-Token": token,
                "X-Run-Storlet": "hostile.py",
                "X-Copy-From": "%s/source.txt" % container,
                "X-Storlet-Parameter-1": "action:tar",
                protocol.EXTRACT_HEADER: "tar",
                "Content-Length": "0",
            },
        )
        resp = connection.getresponse()
        summary = json.loads(resp.read())
    finally:
        connection.close()
    names = sorted(o["name"] for o in conn.get_container(container)[1])
    print("extraction wrote %s; refused %s" % (names, summary["Errors"]))
    assert names == ["out/ok.txt", "source.txt"]
    assert sorted(status for _name, status in summary["Errors"]) == [
        "400 Bad Request",
        "400 Bad Request",
    ]
