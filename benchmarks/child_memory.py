"""Source text the benchmarks' child processes share: the resident memory of the process, from /proc."""

RSS_MIB = """
def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")
"""
