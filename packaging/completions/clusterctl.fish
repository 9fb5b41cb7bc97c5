# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_clusterctl_global_optspecs
    string join \n socket= H/host= hosts-file= parallel h/help V/version
end

function __fish_clusterctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_clusterctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_clusterctl_using_subcommand
    set -l cmd (__fish_clusterctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c clusterctl -n "__fish_clusterctl_needs_command" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_needs_command" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_needs_command" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_needs_command" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -s V -l version -d 'Print version'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "status" -d 'Show units and their instances: state, pids, CPU, memory, restarts, last exit'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "ls" -d 'Show units and their instances: state, pids, CPU, memory, restarts, last exit'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "start" -d 'Start a unit\'s instances (clears a give-up); returns once they are ready'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "stop" -d 'Stop every instance of a unit gracefully; returns once they are gone. With several units, one after the other, dependents first (a unit after those that list it in `after`)'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "restart" -d 'Stop, then start every instance (clears a give-up)'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "reload" -d 'Replace every instance one by one without downtime, with the configuration clusterd has. Refuses when the unit\'s file changed on disk: `daemon-reload` applies files'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "scale" -d 'Change the number of instances: N, +N or -N'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "kill" -d 'Send a signal to a unit\'s running instances: each one\'s own process (gunicorn\'s `kill -HUP` reload), or with --all every process of each'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "send" -d 'Send a message on the worker channel of a unit\'s running instances: one JSON value (text that is not JSON is sent as a JSON string). Node apps receive it with process.on(\'message\')'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "daemon-reload" -d 'Re-read the units directory and apply it (same as SIGHUP to clusterd): new files start, edited ones are applied, removed ones stop. Fails, naming them, for files that cannot be applied and new units that cannot start'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "daemon-reexec" -d 'Check the clusterd binary now on disk for an upgrade in place (root and clusterd\'s own user only). The check only, for now: the re-exec that would follow it is not built yet, so this exits 1 and clusterd keeps running as it was'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "logs" -d 'Show the last lines of a unit\'s log, then (with --follow) every new one. Without a unit, every unit\'s that keeps a log file, interleaved by time, each line prefixed by its unit'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "reopen-logs" -d 'Reopen every log file by name, after an external logrotate renamed them (same as SIGUSR1 to clusterd)'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "metrics" -d 'Print every unit\'s and instance\'s metrics in the Prometheus text format (for node_exporter\'s textfile collector)'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "top" -d 'A live view of every instance\'s CPU, memory, restarts, uptime and state, refreshed every interval, until q or Ctrl-C. Prints one frame when stdout is not a terminal'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "ready" -d 'Exit 0 only if every named unit (default: every unit) runs all its wanted instances and each is ready, and clusterd is not stopping: for readiness probes'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "import" -d 'Turn a PM2 ecosystem file (JavaScript, JSON or YAML) into unit files, one per app, saying what could not be carried over. Does not need clusterd running'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "dial-stdio" -d 'Copy stdin to the control socket and the socket to stdout, until either side closes: what `clusterctl -H ssh://HOST` runs on HOST through ssh (and what a key restricted with `command="clusterctl dial-stdio"` in authorized_keys may run)'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "completions" -d 'Print the completion script for a shell, e.g. `clusterctl completions bash > /etc/bash_completion.d/clusterctl`, or `source <(clusterctl completions bash)` in ~/.bashrc (no bash-completion package needed). Unit names are completed too, asked of the running clusterd'
complete -c clusterctl -n "__fish_clusterctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand status" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand status" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand status" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand status" -l json -d 'Print one JSON object instead of tables'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand status" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand ls" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand ls" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand ls" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand ls" -l json -d 'Print one JSON object instead of tables'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand ls" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand ls" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand start" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand start" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand start" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand start" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand start" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand stop" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand stop" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand stop" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand stop" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand stop" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand restart" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand restart" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand restart" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand restart" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand restart" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand reload" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand reload" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand reload" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand reload" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand reload" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand scale" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand scale" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand scale" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand scale" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand scale" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand kill" -s s -l signal -d 'A name with or without SIG (HUP, SIGHUP, RTMIN+1) or a number from 1 to 64 (15, 1, 10), as kill(1) takes them' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand kill" -l instance -d 'Only this instance (its index)' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand kill" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand kill" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand kill" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand kill" -l all -d 'Every process of each instance (its cgroup or process group), not only its own'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand kill" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand kill" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand send" -l instance -d 'Only this instance (its index)' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand send" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand send" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand send" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand send" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand send" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand daemon-reload" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand daemon-reload" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand daemon-reload" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand daemon-reload" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand daemon-reload" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand daemon-reexec" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand daemon-reexec" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand daemon-reexec" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand daemon-reexec" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand daemon-reexec" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand logs" -s n -l lines -d 'How many lines of history (of each unit)' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand logs" -l instance -d 'Only this instance (its index)' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand logs" -l stream -d 'Only stdout (`out`) or stderr (`err`)' -r -f -a "out\t''
err\t''"
complete -c clusterctl -n "__fish_clusterctl_using_subcommand logs" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand logs" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand logs" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand logs" -s f -l follow -d 'Go on printing new lines as they are written, until Ctrl-C'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand logs" -l raw -d 'Print control characters as they are, even on a terminal'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand logs" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand logs" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand reopen-logs" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand reopen-logs" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand reopen-logs" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand reopen-logs" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand reopen-logs" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand metrics" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand metrics" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand metrics" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand metrics" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand metrics" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand top" -l interval -d 'Time between frames' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand top" -l sort -d 'Busiest first by CPU or by memory' -r -f -a "cpu\t''
mem\t''"
complete -c clusterctl -n "__fish_clusterctl_using_subcommand top" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand top" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand top" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand top" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand top" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand ready" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand ready" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand ready" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand ready" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand ready" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand import" -l env -d 'Merge each app\'s env_<NAME> into its environment (pm2 start --env NAME); without it, each env_<NAME> becomes an [environments.NAME] table' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand import" -l out -d 'Write the units into this directory (else print them)' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand import" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand import" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand import" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand import" -l force -d 'Overwrite unit files that exist (never through a symlink: a symlink is replaced)'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand import" -l allow-exec -d 'Run a JavaScript ecosystem file with node even as root (it runs as root then: read it first). Not needed for data files, nor for users other than root'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand import" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand import" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand dial-stdio" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand dial-stdio" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand dial-stdio" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand dial-stdio" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand dial-stdio" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand completions" -l socket -d 'Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd]' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand completions" -s H -l host -d 'Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio` there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or give a comma list for several hosts [env: CLUSTERD_HOST]' -r
complete -c clusterctl -n "__fish_clusterctl_using_subcommand completions" -l hosts-file -d 'Read host URLs from this file, one a line (`#` starts a comment), as for --host' -r -F
complete -c clusterctl -n "__fish_clusterctl_using_subcommand completions" -l parallel -d 'With several hosts, ask them all at once; without it, `reload`, `restart`, `daemon-reload` (and every other verb that changes something) go host by host and stop at the first host that fails'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand completions" -s h -l help -d 'Print help'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "status" -d 'Show units and their instances: state, pids, CPU, memory, restarts, last exit'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "start" -d 'Start a unit\'s instances (clears a give-up); returns once they are ready'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "stop" -d 'Stop every instance of a unit gracefully; returns once they are gone. With several units, one after the other, dependents first (a unit after those that list it in `after`)'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "restart" -d 'Stop, then start every instance (clears a give-up)'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "reload" -d 'Replace every instance one by one without downtime, with the configuration clusterd has. Refuses when the unit\'s file changed on disk: `daemon-reload` applies files'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "scale" -d 'Change the number of instances: N, +N or -N'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "kill" -d 'Send a signal to a unit\'s running instances: each one\'s own process (gunicorn\'s `kill -HUP` reload), or with --all every process of each'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "send" -d 'Send a message on the worker channel of a unit\'s running instances: one JSON value (text that is not JSON is sent as a JSON string). Node apps receive it with process.on(\'message\')'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "daemon-reload" -d 'Re-read the units directory and apply it (same as SIGHUP to clusterd): new files start, edited ones are applied, removed ones stop. Fails, naming them, for files that cannot be applied and new units that cannot start'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "daemon-reexec" -d 'Check the clusterd binary now on disk for an upgrade in place (root and clusterd\'s own user only). The check only, for now: the re-exec that would follow it is not built yet, so this exits 1 and clusterd keeps running as it was'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "logs" -d 'Show the last lines of a unit\'s log, then (with --follow) every new one. Without a unit, every unit\'s that keeps a log file, interleaved by time, each line prefixed by its unit'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "reopen-logs" -d 'Reopen every log file by name, after an external logrotate renamed them (same as SIGUSR1 to clusterd)'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "metrics" -d 'Print every unit\'s and instance\'s metrics in the Prometheus text format (for node_exporter\'s textfile collector)'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "top" -d 'A live view of every instance\'s CPU, memory, restarts, uptime and state, refreshed every interval, until q or Ctrl-C. Prints one frame when stdout is not a terminal'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "ready" -d 'Exit 0 only if every named unit (default: every unit) runs all its wanted instances and each is ready, and clusterd is not stopping: for readiness probes'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "import" -d 'Turn a PM2 ecosystem file (JavaScript, JSON or YAML) into unit files, one per app, saying what could not be carried over. Does not need clusterd running'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "dial-stdio" -d 'Copy stdin to the control socket and the socket to stdout, until either side closes: what `clusterctl -H ssh://HOST` runs on HOST through ssh (and what a key restricted with `command="clusterctl dial-stdio"` in authorized_keys may run)'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "completions" -d 'Print the completion script for a shell, e.g. `clusterctl completions bash > /etc/bash_completion.d/clusterctl`, or `source <(clusterctl completions bash)` in ~/.bashrc (no bash-completion package needed). Unit names are completed too, asked of the running clusterd'
complete -c clusterctl -n "__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from status start stop restart reload scale kill send daemon-reload daemon-reexec logs reopen-logs metrics top ready import dial-stdio completions" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
# Unit names, from the running clusterd (the line's --socket, if any).
function __fish_clusterctl_socket
    set -l tokens (commandline -opc)
    for i in (seq (count $tokens))
        switch $tokens[$i]
            case --socket
                set -q tokens[(math $i + 1)]; and printf '%s\n' --socket (string replace -r '^~' $HOME -- $tokens[(math $i + 1)])
            case '--socket=*'
                printf '%s\n' --socket (string replace -r '^~' $HOME -- (string replace -- --socket= '' $tokens[$i]))
        end
    end
end
complete -c clusterctl -n "__fish_clusterctl_using_subcommand status ls start stop restart reload scale kill send logs top ready" -f -a "(clusterctl (__fish_clusterctl_socket) __complete-units 2>/dev/null)" -d unit
