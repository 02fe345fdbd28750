#!/usr/bin/env python3
"""tests/e2e/apt-mirror.py MIRROR SUITE ROOT GNUPGHOME PACKAGE...

The apt repository the e2e stand-in's apt source names, for `piforge fetch` in the e2e
(build-standin.sh makes it; run.sh serves it on 127.0.0.1 as piforge's --mirror): a signed
suite SUITE with component main under ROOT (dists/SUITE/InRelease, main/binary-arm64 and
main/binary-all Packages.xz, pool/...) holding the REAL Debian .debs of PACKAGE... and of
every package they depend on (Depends and Pre-Depends, recursively, every alternative and
every provider, so piforge's resolver finds whatever it picks), each checked against the
SHA-256 of Debian's Packages index and listed with Debian's own paragraph.

Its InRelease is signed with a throwaway key (made in GNUPGHOME on first use; the stand-in
trusts its public half, GNUPGHOME/archive-keyring.gpg), not Debian's: the repository this
machine reaches serves an InRelease whose binary-all index differs from the one beside it
(Debian's signature holds, the index does not match it), which piforge fetch rightly refuses;
re-signing a repository of the same .debs keeps every step piforge takes (gpgv, index
hashes, the resolver, the downloads) real.
"""
import hashlib
import lzma
import os
import re
import subprocess
import sys
import time
import urllib.request
from email.utils import formatdate

KEY_UID = "piforge e2e archive (throwaway) <e2e@piforge.invalid>"


def gpg(home, *args, **kw):
    return subprocess.run(
        ["gpg", "--homedir", home, "--batch", "--yes", "--quiet", *args],
        check=True,
        capture_output=True,
        **kw,
    )


def main():
    mirror, suite, root, home = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3], sys.argv[4]
    want = sys.argv[5:]

    def fetch(url, dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with urllib.request.urlopen(url, timeout=120) as r, open(dest + ".part", "wb") as f:
            while True:
                b = r.read(1 << 20)
                if not b:
                    break
                f.write(b)
        os.rename(dest + ".part", dest)
        return dest

    # Debian's indexes (their paragraphs and the .debs' digests), not served.
    pkgs, providers = {}, {}
    for arch in ("arm64", "all"):
        p = fetch(f"{mirror}/dists/{suite}/main/binary-{arch}/Packages.xz", os.path.join(home, f"debian-{arch}.xz"))
        with lzma.open(p, "rt", encoding="utf-8") as fh:
            text = fh.read()
        for para in text.split("\n\n"):
            f = {}
            for line in para.splitlines():
                m = re.match(r"([A-Za-z0-9-]+): ?(.*)", line)
                if m:
                    f[m.group(1)] = m.group(2)
            if "Package" not in f:
                continue
            if f["Package"] not in pkgs:
                pkgs[f["Package"]] = (f, para.strip("\n"))
            for prov in f.get("Provides", "").split(","):
                n = prov.strip().split(" ")[0]
                if n:
                    providers.setdefault(n, []).append(f["Package"])
        os.remove(p)
    seen, todo = set(), list(want)
    while todo:
        n = todo.pop()
        for name in [n] if n in pkgs else providers.get(n, []):
            if name in seen:
                continue
            seen.add(name)
            f = pkgs[name][0]
            for key in ("Depends", "Pre-Depends"):
                for alt in re.split(r"[,|]", f.get(key, "")):
                    dep = alt.strip().split(" ")[0].split(":")[0]
                    if dep:
                        todo.append(dep)
    missing = [w for w in want if w not in seen]
    if missing:
        sys.exit(f"apt-mirror: not in {suite} main: {' '.join(missing)}")

    # The .debs, checked against Debian's index.
    out = {"arm64": [], "all": []}
    for name in sorted(seen):
        f, para = pkgs[name]
        dest = fetch(f"{mirror}/{f['Filename']}", os.path.join(root, f["Filename"]))
        with open(dest, "rb") as fh:
            data = fh.read()
        if len(data) != int(f["Size"]) or hashlib.sha256(data).hexdigest() != f["SHA256"]:
            sys.exit(f"apt-mirror: {f['Filename']} differs from Debian's index")
        out["all" if f["Architecture"] == "all" else "arm64"].append(para)
        print("apt-mirror:", f["Filename"])

    # The suite: Packages.xz per architecture, Release, InRelease.
    lines = []
    for arch, paras in out.items():
        rel = f"main/binary-{arch}/Packages.xz"
        body = lzma.compress(("\n\n".join(paras) + "\n").encode())
        path = os.path.join(root, "dists", suite, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(body)
        lines.append(f" {hashlib.sha256(body).hexdigest()} {len(body)} {rel}")
    release = (
        f"Origin: piforge-e2e\nLabel: piforge-e2e\nSuite: {suite}\nCodename: {suite}\n"
        f"Date: {formatdate(time.time(), usegmt=True)}\nArchitectures: arm64 all\n"
        f"Components: main\nDescription: Debian {suite} .debs for the piforge e2e, re-signed\n"
        "SHA256:\n" + "\n".join(lines) + "\n"
    )
    dists = os.path.join(root, "dists", suite)
    with open(os.path.join(dists, "Release"), "w") as fh:
        fh.write(release)
    os.makedirs(home, mode=0o700, exist_ok=True)
    if gpg(home, "--list-secret-keys").stdout.strip() == b"":
        gpg(home, "--passphrase", "", "--quick-gen-key", KEY_UID, "ed25519", "sign", "never")
    gpg(home, "--clearsign", "-o", os.path.join(dists, "InRelease"), os.path.join(dists, "Release"))
    with open(os.path.join(home, "archive-keyring.gpg"), "wb") as fh:
        fh.write(gpg(home, "--export").stdout)
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False)


if __name__ == "__main__":
    main()
