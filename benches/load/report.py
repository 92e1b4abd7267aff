"""Formats the load test results as a Markdown table with ratios to nginx.

Usage: report.py RESULTS_TSV HALF_RATE DURATION CONNECTIONS [--write]

With --write, the table replaces the text between the load-test markers in
docs/benchmarks.md, together with the machine description.
"""

import csv
import os
import platform
import subprocess
import sys

BEGIN = "<!-- load-test:begin -->"
END = "<!-- load-test:end -->"


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    kernel = platform.release()
    cores = os.cpu_count()
    return f"{cores} cores ({model}), Linux {kernel}"


def versions() -> str:
    def first_line(command: list[str]) -> str:
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError:
            return "?"
        text = (result.stdout or result.stderr).strip().splitlines()
        return text[0] if text else "?"

    nginx = first_line(["nginx", "-v"]).replace("nginx version: ", "")
    haproxy = first_line(["haproxy", "-v"]).split(" - ")[0]
    return f"{nginx}, {haproxy}, Pingora 0.9 (benches/pingora-proxy, release build)"


def ratio(value: str, base: str) -> str:
    try:
        return f"{float(value) / float(base):.2f}"
    except (ValueError, ZeroDivisionError):
        return "-"


def main() -> None:
    results_path, half_rate, duration, connections = sys.argv[1:5]
    write = "--write" in sys.argv[5:]
    with open(results_path) as results_file:
        rows = list(csv.DictReader(results_file, delimiter="\t"))
    nginx = next(row for row in rows if row["target"] == "nginx")

    lines = [
        f"Machine: {machine()}. Proxies: gatehouse (release build), {versions()}.",
        f"Workload: wrk, 1 thread, {connections} keep-alive connections, {duration} s per "
        "target, GET / returning a 3-byte body from an nginx upstream. Each proxy runs "
        "with one worker pinned to CPU 1; wrk and the upstream share CPU 0.",
        f"Half load: oha at {half_rate} requests/s (half of nginx's saturated rate), "
        "16 connections, same duration.",
        "",
        "| target | requests/s | vs nginx | p50 ms | p99 ms | CPU µs/request | vs nginx "
        "| p99 ms at half load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['target']} | {float(row['rps']):,.0f} | {ratio(row['rps'], nginx['rps'])} "
            f"| {row['p50_ms']} | {row['p99_ms']} | {row['cpu_us_per_req']} "
            f"| {ratio(row['cpu_us_per_req'], nginx['cpu_us_per_req'])} | {row['half_p99_ms']} |"
        )
    direct = next((row for row in rows if row["target"] == "direct"), None)
    if direct is not None:
        lines.append("")
        for row in rows:
            if row["target"] == "direct":
                continue
            try:
                added = (float(row["half_p99_ms"]) - float(direct["half_p99_ms"])) * 1000
                lines.append(f"- {row['target']} adds {added:.0f} µs to p99 at half load.")
            except ValueError:
                pass
    table = "\n".join(lines)
    print(table)

    if write:
        path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "benchmarks.md")
        with open(path) as document:
            text = document.read()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        text = text[:start] + "\n" + table + "\n" + text[end:]
        with open(path, "w") as document:
            document.write(text)


if __name__ == "__main__":
    main()
