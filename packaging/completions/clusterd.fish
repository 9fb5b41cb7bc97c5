complete -c clusterd -l units -d 'Directory of unit files (*.toml); each file is one unit named after its stem' -r -F
complete -c clusterd -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else /run/clusterd/clusterd.sock for root, $XDG_RUNTIME_DIR/clusterd.sock or /tmp/clusterd-$UID/clusterd.sock for others]' -r -F
complete -c clusterd -l socket-group -d 'Let members of this group use the control socket too (mode 0660 instead of 0600)' -r
complete -c clusterd -l isolation -d 'How instances are kept together: `cgroup` (each in a cgroup of its own; nothing it starts can escape a stop), `process-group`, or `auto` (cgroup where clusterd can create cgroups, else process-group)' -r -f -a "auto\t'A cgroup per instance where clusterd can create cgroups, else process groups'
cgroup\t'A cgroup per instance, or clusterd does not start'
process-group\t'Process groups only'"
complete -c clusterd -l log-dir -d 'Where `file` logs live [default: /var/log/clusterd for root, else $XDG_STATE_HOME/clusterd/log or ~/.local/state/clusterd/log; with a --socket other than the default, that path, `@`, and the socket\'s path escaped as systemd-escape --path does, so that two daemons never share one]. Created if missing (0750); must belong to clusterd\'s user and be writable by it alone' -r -F
complete -c clusterd -l log-default -d 'Where the output of units without their own `[log] to` goes: file, console, journal or inherit [default: file; console in container mode]' -r
complete -c clusterd -l metrics-listen -d 'Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 or localhost:9464 (HOST:PORT; a host name is served on every address it resolves to; off by default; anyone who can reach the address can read them)' -r
complete -c clusterd -l shutdown-delay -d 'After SIGTERM or SIGINT, go on serving this long before stopping the units (the instances keep running, `clusterctl ready` fails): time for a load balancer to stop sending traffic. A second signal stops at once' -r
complete -c clusterd -l environment -d 'Run the units in this environment: each unit\'s `[environments.NAME]` variables are added over its `environment` (PM2\'s `--env production`)' -r
complete -c clusterd -l container -d 'Run as a container\'s main process (implied when clusterd is PID 1): units log to the console by default, SIGQUIT stops like SIGTERM, and the exit status says whether an instance had to be killed'
complete -c clusterd -l exit-on-giveup -d 'When a unit gives up (reaches its restart limit), stop every unit and exit with status 69, so that the supervisor above clusterd (systemd, Kubernetes) sees it'
complete -c clusterd -l check -d 'Validate the unit files, print every error, and exit (1 if any file is invalid)'
complete -c clusterd -s h -l help -d 'Print help (see more with \'--help\')'
complete -c clusterd -s V -l version -d 'Print version'
