"""Relabel a `docker save` archive's image with another architecture (stdin to stdout):

    docker save IMAGE | python3 scripts/image_platform.py arm64 | docker load

Debian bookworm's Docker (20.10, no buildx) can only build for another platform with its legacy
builder, which runs the arm64 base's binaries through qemu-user (binfmt_misc) but labels every
image it commits with the host's architecture. The layers are right; this fixes the label, so
that `docker run --platform linux/arm64` and registries see an arm64 image.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile


def relabel(architecture: str, source, target) -> None:
    archive = tarfile.open(fileobj=source, mode="r|")
    output = tarfile.open(fileobj=target, mode="w|")
    for member in archive:
        data = archive.extractfile(member).read() if member.isfile() else None
        top_level = "/" not in member.name.strip("./")
        if data is not None and top_level and member.name.endswith(".json") \
                and member.name != "manifest.json":
            config = json.loads(data)
            if "architecture" in config:  # the image config
                config["architecture"] = architecture
                config.pop("variant", None)
                data = json.dumps(config).encode()
                member.size = len(data)
        output.addfile(member, io.BytesIO(data) if data is not None else None)
    output.close()


if __name__ == "__main__":
    relabel(sys.argv[1], sys.stdin.buffer, sys.stdout.buffer)
