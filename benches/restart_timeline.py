#!/usr/bin/env python3
"""Where a restart's time goes, step by step, from the kernel's scheduler trace.

Record the machine while benches/restart_ab.c kills workers of the supervisors to compare,
then read the trace with this script:

    perf record -a -o restart.data -e signal:signal_generate -e sched:sched_process_exit \\
        -e sched:sched_process_fork -e sched:sched_process_exec -e sched:sched_switch \\
        -e sched:sched_wakeup -- ./restart_ab 60 STAMPS_A STAMPS_B ...
    perf script -i restart.data -F comm,pid,tid,cpu,time,event,trace --ns > restart.txt
    python3 benches/restart_timeline.py restart.txt

Only tracepoints of the scheduler and of signals are recorded: a system-call tracepoint would
send every system call of the machine through the slow path and change what is measured.

For each supervisor (by pid), the median time from the kill(2) of a worker to each step:
  exit   the worker starts to exit;
  chld   the kernel sends the supervisor SIGCHLD (the exit path is done: files closed, the
         cgroup left);
  run    the supervisor's thread that gets it is on a CPU;
  fork   the replacement exists (clone/fork returned in the kernel);
  exec   the replacement has exec'd the worker program;
  stamp  the worker, having written its stamp, sleeps in pause().
Then what ran on the supervisor's CPU between "chld" and "run", most frequent first.
"""

import collections
import re
import statistics
import sys

LINE = re.compile(r"^\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")
STEPS = ["exit", "chld", "run", "fork", "exec", "stamp"]


def events(path):
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if m:
                comm, pid, tid, cpu, at, name, trace = m.groups()
                yield comm, int(pid), int(tid), int(cpu), float(at), name, trace


def field(trace, name):
    m = re.search(r"(?:^| )%s=(\S+)" % name, trace)
    return m.group(1) if m else None


def restarts(ev):
    """One record per SIGKILL that restart_ab sent: the time of each step after it."""
    for i, (comm, _pid, _tid, _cpu, at, name, trace) in enumerate(ev):
        if not (name == "signal:signal_generate" and field(trace, "sig") == "9"
                and comm.startswith("restart_ab")):
            continue
        victim = int(field(trace, "pid"))
        steps, ran_before, woken_on = {}, [], {}
        supervisor = child = supervisor_cpu = None
        for comm2, pid2, _tid2, cpu2, at2, name2, trace2 in ev[i + 1:i + 4000]:
            if name2 == "sched:sched_wakeup":
                # The kernel wakes the supervisor just before it records the SIGCHLD.
                woken_on[field(trace2, "pid")] = int(field(trace2, "target_cpu"))
            if name2 == "sched:sched_process_exit" and pid2 == victim and "exit" not in steps:
                steps["exit"] = at2
            elif (name2 == "signal:signal_generate" and field(trace2, "sig") == "17"
                  and pid2 == victim and "chld" not in steps):
                steps["chld"] = at2
                supervisor = int(field(trace2, "pid"))
                supervisor_cpu = woken_on.get(str(supervisor))
            elif supervisor and name2 == "sched:sched_switch" and "run" not in steps:
                nxt = field(trace2, "next_pid")
                if nxt == str(supervisor):
                    steps["run"] = at2
                elif cpu2 == supervisor_cpu and "chld" in steps:
                    ran_before.append(field(trace2, "next_comm"))
            elif (supervisor and name2 == "sched:sched_process_fork" and pid2 == supervisor
                  and child is None):
                child = int(field(trace2, "child_pid"))
                steps["fork"] = at2
            elif child and name2 == "sched:sched_process_exec" and pid2 == child:
                steps["exec"] = at2
            elif (child and "exec" in steps and name2 == "sched:sched_switch"
                  and field(trace2, "prev_pid") == str(child)
                  and field(trace2, "prev_state") == "S"):
                steps["stamp"] = at2
                break
        if all(s in steps for s in STEPS):
            yield supervisor, at, steps, ran_before


def main():
    ev = list(events(sys.argv[1]))
    by_supervisor = collections.defaultdict(list)
    for supervisor, killed_at, steps, ran_before in restarts(ev):
        by_supervisor[supervisor].append((killed_at, steps, ran_before))
    names = {pid: comm for comm, pid, *_ in ev}
    for supervisor, records in by_supervisor.items():
        print("%s (pid %d): %d restarts; median µs after the kill (and after the step before)"
              % (names.get(supervisor, "?"), supervisor, len(records)))
        previous = None
        for step in STEPS:
            total = statistics.median((s[step] - k) * 1e6 for k, s, _ in records)
            delta = statistics.median(
                (s[step] - (s[previous] if previous else k)) * 1e6 for k, s, _ in records)
            print("  %-6s %7.1f  (+%6.1f)" % (step, total, delta))
            previous = step
        before = collections.Counter(" > ".join(r) if r else "(nothing)" for _, _, r in records)
        print("  ran on its CPU between SIGCHLD and it:")
        for what, n in before.most_common(4):
            print("    %3d × %s" % (n, what))


if __name__ == "__main__":
    main()
