#!/usr/bin/env python3
"""Shows a defect of `rclone serve webdav` (Debian's rclone 1.60): while files are PUT and
MOVEd in a folder, a PROPFIND Depth 1 of that folder often omits entries that exist.

Run with the test servers up (`tests/run.sh --serve`, then `. <their env file>`):
    python3 benches/rclone-listing-race.py
It creates a folder with two files and a subfolder, then for 20 s two writers PUT and MOVE
files in it while a reader lists it, and prints how many listings missed one of the three.
Apache's URL (CLOUDMOUNT_TEST_APACHE_BASIC_URL as RACE_URL) gives none.
"""
import base64, http.client, os, re, threading, time, urllib.parse

url = urllib.parse.urlparse(os.environ.get("RACE_URL") or os.environ["CLOUDMOUNT_TEST_RCLONE_URL"])
auth = "Basic " + base64.b64encode(("%s:%s" % (os.environ["CLOUDMOUNT_TEST_USER"],
                                    os.environ["CLOUDMOUNT_TEST_PASSWORD"])).encode()).decode()
base = url.path.rstrip("/") + "/race%d/" % int(time.time())


def req(c, method, path, body=None, headers=None):
    h = {"Authorization": auth}
    h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    return r.status, r.read()


c = http.client.HTTPConnection(url.hostname, url.port)
req(c, "MKCOL", base)
for n in ["keep1", "keep2"]:
    req(c, "PUT", base + n, b"x" * 100)
req(c, "MKCOL", base + "sub")
stop = False
missing = []
total = [0]


def writer(k):
    w = http.client.HTTPConnection(url.hostname, url.port)
    i = 0
    while not stop:
        i += 1
        tmp = base + ".tmp%d-%d.part" % (k, i)
        req(w, "PUT", tmp, os.urandom(2000))
        req(w, "MOVE", tmp, headers={"Destination": base + "f%d" % k, "Overwrite": "T"})


def lister():
    conn = http.client.HTTPConnection(url.hostname, url.port)
    while not stop:
        status, body = req(conn, "PROPFIND", base, b"", {"Depth": "1"})
        hrefs = [h.rstrip(b"/") for h in re.findall(rb"<D:href>([^<]*)</D:href>", body, re.I)]
        total[0] += 1
        have = sum(1 for k in [b"keep1", b"keep2", b"sub"] if any(h.endswith(k) for h in hrefs))
        if status != 207 or have != 3:
            missing.append(have)


threads = [threading.Thread(target=writer, args=(k,)) for k in (1, 2)]
threads.append(threading.Thread(target=lister))
for t in threads:
    t.start()
time.sleep(20)
stop = True
for t in threads:
    t.join()
print("%d listings, %d missed entries that exist" % (total[0], len(missing)))
