//! The bench's options: flags after `--` and `CLUSTERD_BENCH_*` variables.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) enum Peer {
    Clusterd,
    Pm2,
    Supervisord,
    NodeCluster,
}

pub(super) const PEERS: [Peer; 4] = [
    Peer::Clusterd,
    Peer::Pm2,
    Peer::Supervisord,
    Peer::NodeCluster,
];

impl Peer {
    pub(super) fn name(self) -> &'static str {
        match self {
            Peer::Clusterd => "clusterd",
            Peer::Pm2 => "PM2",
            Peer::Supervisord => "supervisord",
            Peer::NodeCluster => "Node cluster",
        }
    }
    pub(super) fn key(self) -> &'static str {
        match self {
            Peer::Clusterd => "clusterd",
            Peer::Pm2 => "pm2",
            Peer::Supervisord => "supervisord",
            Peer::NodeCluster => "node",
        }
    }
}

pub(super) struct Opts {
    pub(super) quick: bool,
    pub(super) runs: usize,
    pub(super) only: Option<HashSet<String>>,
    pub(super) skip: HashSet<String>,
    pub(super) idle_secs: u64,
    pub(super) kills: usize,
    pub(super) mass: usize,
    pub(super) wrk_secs: u64,
    pub(super) json: Option<PathBuf>,
    pub(super) chart: Option<PathBuf>,
    pub(super) scratch: PathBuf,
}

impl Opts {
    pub(super) fn parse() -> Opts {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let list = |v: &str| -> HashSet<String> {
            v.split(',')
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let mut o = Opts {
            quick: env("CLUSTERD_BENCH_QUICK").is_some_and(|v| v != "0"),
            runs: env("CLUSTERD_BENCH_RUNS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(3),
            only: env("CLUSTERD_BENCH_ONLY").map(|v| list(&v)),
            skip: env("CLUSTERD_BENCH_SKIP")
                .map(|v| list(&v))
                .unwrap_or_default(),
            idle_secs: 30,
            kills: 30,
            mass: 1000,
            wrk_secs: 10,
            json: None,
            chart: None,
            scratch: env("CLUSTERD_BENCH_SCRATCH")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_TARGET_TMPDIR")).join("supervisors-bench")
                }),
        };
        let mut explicit = HashSet::new();
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut num = |name: &str| -> u64 {
                explicit.insert(name.to_string());
                args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                    eprintln!("supervisors: {name} needs a number");
                    std::process::exit(2)
                })
            };
            match a.as_str() {
                "--quick" => o.quick = true,
                "--runs" => o.runs = num("--runs") as usize,
                "--idle-secs" => o.idle_secs = num("--idle-secs"),
                "--kills" => o.kills = num("--kills") as usize,
                "--mass" => o.mass = num("--mass") as usize,
                "--wrk-secs" => o.wrk_secs = num("--wrk-secs"),
                "--only" => o.only = args.next().map(|v| list(&v)),
                "--skip" => o
                    .skip
                    .extend(args.next().map(|v| list(&v)).unwrap_or_default()),
                "--json" => o.json = args.next().map(PathBuf::from),
                "--chart" => o.chart = args.next().map(PathBuf::from),
                "--bench" => {} // cargo bench passes this to harness = false targets
                other => eprintln!("supervisors: ignoring unknown argument {other:?}"),
            }
        }
        if o.quick {
            for p in ["pm2", "supervisord", "node"] {
                o.skip.insert(p.into());
            }
            if !explicit.contains("--runs") {
                o.runs = 1;
            }
            if !explicit.contains("--idle-secs") {
                o.idle_secs = 2;
            }
            if !explicit.contains("--kills") {
                o.kills = 5;
            }
            if !explicit.contains("--mass") {
                o.mass = 100;
            }
            if !explicit.contains("--wrk-secs") {
                o.wrk_secs = 2;
            }
            if o.only.is_none() {
                o.only = Some(list("mem,idle,restart,mass,ctl"));
            }
        }
        o.runs = o.runs.max(1);
        o
    }
    pub(super) fn wants(&self, metric: &str) -> bool {
        self.only.as_ref().is_none_or(|s| s.contains(metric))
    }
    pub(super) fn peer_on(&self, p: Peer) -> bool {
        p == Peer::Clusterd || !self.skip.contains(p.key())
    }
}
