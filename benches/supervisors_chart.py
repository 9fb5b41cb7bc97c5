"""Draws docs/benchmarks.png from the JSON that `cargo bench --bench supervisors -- --json F`
(or `--chart PNG`) writes. Usage: python3 supervisors_chart.py results.json out.png"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"clusterd": "#2b7bba", "pm2": "#e8743b", "supervisord": "#7a7a7a", "node": "#3ca45c"}
NAMES = {"clusterd": "clusterd", "pm2": "PM2", "supervisord": "supervisord", "node": "Node cluster"}


def main(src, dst):
    data = json.load(open(src))
    rows = {r["key"]: r["values"] for r in data["rows"]}

    def bars(ax, title, keys, labels, peers, log=False, unit=""):
        width = 0.8 / max(len(peers), 1)
        drawn = False
        for i, peer in enumerate(peers):
            xs, ys, lo, hi = [], [], [], []
            for j, key in enumerate(keys):
                v = rows.get(key, {}).get(peer)
                if v is None:
                    continue
                xs.append(j + (i - (len(peers) - 1) / 2) * width)
                ys.append(v["median"])
                lo.append(v["median"] - v["min"])
                hi.append(v["max"] - v["median"])
            if not xs:
                continue
            drawn = True
            b = ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, color=COLORS[peer], label=NAMES[peer])
            for rect, y in zip(b, ys):
                text = f"{y:.3g}" if y < 1000 else f"{y / 1000:.3g}k"
                ax.annotate(text, (rect.get_x() + rect.get_width() / 2, max(y, 1e-9)),
                            ha="center", va="bottom", fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(labels, fontsize=8)
        if log and drawn:
            ax.set_yscale("log")
        if unit:
            ax.set_ylabel(unit, fontsize=8)
        if drawn:
            ax.legend(fontsize=7)

    sup = ["clusterd", "pm2", "supervisord"]
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    bars(axes[0][0], "Daemon RSS (lower is better)", ["rss10", "rss1000"],
         ["10 instances", "1000 instances"], sup, unit="MiB")
    bars(axes[0][1], "Idle: context switches per 30 s", ["idle_csw"], ["10 idle instances"], sup)
    bars(axes[0][2], "Restart latency after SIGKILL (log)", ["restart_p50", "restart_p90"],
         ["p50", "p90"], sup, log=True, unit="ms")
    bars(axes[1][0], "Start until 1000th instance runs (log)", ["mass"], ["1000 instances"], sup,
         log=True, unit="s")
    bars(axes[1][1], "Control round trip: status (log)", ["ctl10", "ctl1000"],
         ["10 instances", "1000 instances"], sup, log=True, unit="ms")
    # HTTP: clusterd's modes (listen fd 3: shared, reuseport; node_cluster: round-robin, shared)
    # next to Node cluster and PM2 (one value each).
    ax = axes[1][2]
    items = []
    for key, label in [
        ("http_shared", "clusterd\nshared"),
        ("http_reuseport", "clusterd\nreuseport"),
        ("http_node_rr", "clusterd\nnode rr"),
        ("http_node_shared", "clusterd\nnode shared"),
    ]:
        v = rows.get(key, {}).get("clusterd")
        if v:
            items.append((label, v, "clusterd"))
    for peer in ["node", "pm2"]:
        v = rows.get("http_shared", {}).get(peer)
        if v:
            items.append((NAMES[peer].replace(" ", "\n"), v, peer))
    for i, (label, v, peer) in enumerate(items):
        ax.bar(i, v["median"], 0.6, yerr=[[v["median"] - v["min"]], [v["max"] - v["median"]]],
               capsize=3, color=COLORS[peer])
        ax.annotate(f"{v['median'] / 1000:.1f}k", (i, v["median"]), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(items)))
    ax.set_xticklabels([it[0] for it in items], fontsize=7)
    ax.set_title("HTTP hello world, 2 instances, wrk -t2 -c50", fontsize=10)
    ax.set_ylabel("requests/s", fontsize=8)

    m = data.get("machine", {})
    fig.suptitle(
        f"clusterd vs PM2 {m.get('pm2', '')} / supervisord {m.get('supervisord', '')} / Node {m.get('node', '')}"
        f" — {m.get('nproc', '?')} CPUs, {m.get('cpu', '')}, Linux {m.get('kernel', '')};"
        f" median of {data.get('runs', '?')} runs, bars = min–max",
        fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
