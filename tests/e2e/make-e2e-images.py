#!/usr/bin/env python3
"""tests/e2e/make-e2e-images.py OUTDIR BUSYBOX_DEB ARTIFACTS_TOML KUBERNETES_VERSION

The container images of a Kubernetes release, for `make e2e`, as OCI image layout directories
under OUTDIR/images/<registry>/<repository>_<tag>/ (what `piforge fetch/build --artifacts DIR`
reads, README "Commands"), under the REAL references of the release in artifacts.toml:
kubeadm's list (kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy at
registry.k8s.io/<name>:v<version>, CoreDNS, pause, etcd), flannel's images and kube-vip's.

Each is a real linux/arm64 image: one gzip layer holding /bin/busybox from Debian's arm64
busybox-static package (BUSYBOX_DEB) and /bin/sh linking to it, a config naming its
reference, an OCI manifest, and an OCI index listing that manifest for linux/arm64, as the
registries serve them. Reproducible: fixed times and owners, no gzip name or time.
"""
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tomllib

EPOCH = 1704067200


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def busybox_binary(deb):
    """/usr/bin/busybox from the .deb (dpkg-deb --fsys-tarfile, read with tarfile)."""
    tar_bytes = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", deb], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as t:
        for m in t.getmembers():
            if m.name.lstrip("./") in ("usr/bin/busybox", "bin/busybox") and m.isfile():
                return t.extractfile(m).read()
    sys.exit(f"make-e2e-images.py: no busybox binary in {deb}")


def layer(busybox):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        d = tarfile.TarInfo("bin")
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, EPOCH
        t.addfile(d)
        f = tarfile.TarInfo("bin/busybox")
        f.size, f.mode, f.mtime = len(busybox), 0o755, EPOCH
        t.addfile(f, io.BytesIO(busybox))
        s = tarfile.TarInfo("bin/sh")
        s.type, s.linkname, s.mode, s.mtime = tarfile.SYMTYPE, "busybox", 0o777, EPOCH
        t.addfile(s)
    tar_bytes = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, filename="") as g:
        g.write(tar_bytes)
    return tar_bytes, gz.getvalue()


def release_images(toml_path, version):
    with open(toml_path, "rb") as f:
        cat = tomllib.load(f)
    rel = next((r for r in cat["release"] if r["kubernetes"] == version), None)
    if rel is None:
        sys.exit(f"make-e2e-images.py: Kubernetes {version} is not in {toml_path}")
    out = [
        f"registry.k8s.io/{n}:v{version}"
        for n in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
    ]
    for key in ("coredns_image", "pause_image", "etcd_image", "kube_vip_image"):
        if rel.get(key):
            out.append(rel[key])
    out.extend(rel.get("flannel_images", []))
    return out


def write_layout(outdir, ref, tar_bytes, gz_bytes):
    registry, rest = ref.split("/", 1)
    repo, tag = rest.rsplit(":", 1)
    d = os.path.join(outdir, "images", registry, f"{repo}_{tag}")
    blobs = os.path.join(d, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(b):
        with open(os.path.join(blobs, digest(b)[7:]), "wb") as f:
            f.write(b)
        return digest(b)

    config = json.dumps(
        {
            "architecture": "arm64",
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {
                "Entrypoint": ["/bin/busybox"],
                "Cmd": ["sleep", "infinity"],
                "Labels": {"org.piforge.e2e.reference": ref},
            },
            "rootfs": {"type": "layers", "diff_ids": [digest(tar_bytes)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": put(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": put(gz_bytes),
                    "size": len(gz_bytes),
                }
            ],
        },
        sort_keys=True,
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": put(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": "arm64", "os": "linux"},
                }
            ],
        },
        sort_keys=True,
    ).encode()
    top = put(index)
    with open(os.path.join(d, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(os.path.join(d, "index.json"), "w") as f:
        json.dump(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "digest": top,
                        "size": len(index),
                        "annotations": {
                            "io.containerd.image.name": ref,
                            "org.opencontainers.image.ref.name": tag,
                        },
                    }
                ],
            },
            f,
            sort_keys=True,
        )
    return top


def main():
    outdir, deb, toml_path, version = sys.argv[1:5]
    tar_bytes, gz_bytes = layer(busybox_binary(deb))
    for ref in release_images(toml_path, version):
        print(f"{write_layout(outdir, ref, tar_bytes, gz_bytes)}  {ref}")


if __name__ == "__main__":
    main()
