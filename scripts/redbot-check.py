#!/usr/bin/env python3
"""Lint larder's answers with REDbot ("lint for HTTP"), including its sub-requests
(conditional, range, content negotiation), for each URL given.

    redbot-check.py LABEL URL [Header: value]... [-- LABEL URL [Header: value]...]...

Prints every note at WARN or BAD, one line each, and exits 1 if any is BAD. REDbot's own
command line cannot send credentials and always exits 0, hence this wrapper. Each URL is
checked in a process of its own: REDbot's event loop does not start cleanly twice.
"""
import subprocess
import sys
from configparser import ConfigParser

import thor
from redbot.resource import HttpResource


def check(url, headers):
    config = ConfigParser()
    config.read_dict({"redbot": {"enable_local_access": "True"}})
    resource = HttpResource(config["redbot"])
    resource.set_request(url, method="GET", headers=headers)

    @thor.events.on(resource)
    def check_done():
        thor.stop()

    resource.check()
    thor.run()
    found = [("", resource.response.status_code, n) for n in resource.response.notes]
    for name, sub in resource.subreqs.items():
        if sub.response.complete:
            found += [(name, sub.response.status_code, n) for n in sub.response.notes]
    return resource.response.status_code, found


def main(argv):
    cases, current = [], []
    for arg in argv + ["--"]:
        if arg == "--":
            if current:
                cases.append(current)
            current = []
        else:
            current.append(arg)
    if len(cases) > 1:
        failed = [subprocess.run([sys.executable, __file__, *case]).returncode for case in cases]
        bad = sum(1 for code in failed if code)
        print(f"redbot: {len(cases)} URLs checked, {bad} with BAD notes")
        return 1 if bad else 0
    label, url, raw_headers = cases[0][0], cases[0][1], cases[0][2:]
    headers = [tuple(h.split(": ", 1)) for h in raw_headers]
    status, notes = check(url, headers)
    print(f"redbot: {label}: {url} -> {status}", flush=True)
    if status is None:
        print("  BAD no response")
        return 1
    bad = 0
    for sub, sub_status, note in notes:
        level = note.level.name
        if level in ("WARN", "BAD"):
            where = f" [{sub} -> {sub_status}]" if sub else ""
            print(f"  {level} {note.__class__.__name__}{where}: {note.summary}", flush=True)
            bad += level == "BAD"
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
