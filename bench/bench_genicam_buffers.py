"""GenICam buffer -> BGR: reading an Aravis buffer in place (the source's zero-copy view through
``arv_buffer_get_data``) vs ``buffer.get_data()`` (PyGObject copies the payload into ``bytes``).

Real stream buffers from Aravis' fake GigE Vision camera (started here on 127.0.0.1; apt
aravis-tools): each popped buffer is converted by both paths, in alternating order, with the
same ``to_bgr``; then pushed back. Reports the median per-frame time of each path and the ratio,
per image size and pixel format.

    python bench/bench_genicam_buffers.py [--frames 60]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

import numpy as np

from edge.runtime.sources.genicam import _BufferMemory, load_aravis, to_bgr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=60)
    a = ap.parse_args()
    arv = load_aravis()
    memory = _BufferMemory()
    assert memory.zero_copy, "libaravis-0.8.so.0 not reachable through ctypes"
    fake = subprocess.Popen(
        ["arv-fake-gv-camera-0.8", "-i", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        cam = arv.Camera.new("127.0.0.1")
        print("| size | format | in place (ms) | get_data copy (ms) | copy / in place |")
        print("|---|---|---:|---:|---:|")
        for w, h in ((640, 480), (1280, 1024), (2048, 2048)):
            for name in ("Mono8", "BayerRG8", "Mono16"):
                cam.set_region(0, 0, w, h)
                cam.set_pixel_format_from_string(name)
                stream = cam.create_stream(None, None)
                for _ in range(8):
                    stream.push_buffer(arv.Buffer.new_allocate(cam.get_payload()))
                cam.start_acquisition()
                times: dict[str, list[float]] = {"view": [], "copy": []}
                n = 0
                deadline = time.monotonic() + 60
                while n < a.frames and time.monotonic() < deadline:
                    buf = stream.timeout_pop_buffer(1_000_000)
                    if buf is None:
                        continue
                    if buf.get_status() == arv.BufferStatus.SUCCESS:
                        pf = buf.get_image_pixel_format()
                        order = ("view", "copy") if n % 2 else ("copy", "view")
                        for path in order:
                            t0 = time.perf_counter()
                            data = (
                                memory.view(buf)
                                if path == "view"
                                else np.frombuffer(buf.get_data(), np.uint8)
                            )
                            to_bgr(data, w, h, pf)
                            times[path].append((time.perf_counter() - t0) * 1e3)
                        n += 1
                    stream.push_buffer(buf)
                cam.stop_acquisition()
                del stream
                v, c = statistics.median(times["view"]), statistics.median(times["copy"])
                print(f"| {w}x{h} | {name} | {v:.3f} | {c:.3f} | {c / v:.2f} |", flush=True)
    finally:
        fake.kill()
        fake.wait()


if __name__ == "__main__":
    main()
