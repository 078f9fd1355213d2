"""A throwaway one-node SLURM cluster (Debian's slurm-wlm and munge) for the SLURM tests.

``SlurmCluster(folder).start()`` writes a minimal ``slurm.conf`` (this host as the only node,
2 CPUs, state and spool folders under ``folder``, private ports and a private munge socket and
key, so it neither needs nor disturbs a system-wide installation), starts ``munged``,
``slurmctld`` and ``slurmd`` in the foreground as child processes and waits until the node
accepts jobs. ``stop()`` ends exactly those processes, by PID. Clients (``sbatch``, ``squeue``,
``scontrol`` and submitit, which calls them) find the cluster through ``SLURM_CONF``, which
``env()`` returns.

Needs root (slurmd runs jobs as their user) and the binaries; ``missing_requirement()`` says
what is missing, so the tests can skip with a reason. Run by hand for a look:
``python tests/slurm_cluster.py`` starts a cluster, runs one ``sbatch --wrap`` job, stops it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

BINARIES = ('munged', 'slurmctld', 'slurmd', 'sbatch', 'squeue', 'scontrol', 'sinfo')
NODE_CPUS = 2
# Lifetime of a job credential, which is also how long SLURM holds a requeued job before it
# starts again (slurm.conf's AuthInfo cred_expire; SLURM's default is 120 s). The hold lets
# slurmd finish with the previous run: starting the job sooner (scontrol StartTime=now) can
# meet "Job credential revoked". Short here, so requeue tests wait seconds, not minutes.
CRED_EXPIRE_S = 5


def missing_requirement() -> str | None:
    """Why a cluster cannot start here (None when it can)."""
    if os.name != 'posix' or os.geteuid() != 0:
        return 'the SLURM daemons need root (slurmd starts jobs as their user)'
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return (
            f'{", ".join(absent)} not installed '
            '(apt-get install -y slurm-wlm munge; .ci/run does this)'
        )
    return None


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class SlurmCluster:
    """munged + slurmctld + slurmd on this host, everything under ``folder``."""

    def __init__(self, folder: str | os.PathLike, kill_wait_s: int = 60):
        self.folder = Path(folder).resolve()
        self.kill_wait_s = kill_wait_s
        self.host = socket.gethostname().split('.')[0]
        self.conf = self.folder / 'slurm.conf'
        self.munge_socket = self.folder / 'munge' / 'munge.socket'
        self.processes: dict[str, subprocess.Popen] = {}

    def env(self) -> dict[str, str]:
        """Environment variables that point SLURM's clients at this cluster."""
        return {'SLURM_CONF': str(self.conf)}

    def _write_config(self) -> None:
        for sub in ('munge', 'state', 'spool', 'log'):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        memory_mb = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**20
        lines = [
            'ClusterName=drol-test',
            f'SlurmctldHost={self.host}(127.0.0.1)',
            f'SlurmctldPort={free_port()}',
            f'SlurmdPort={free_port()}',
            'SlurmUser=root',
            'SlurmdUser=root',
            'AuthType=auth/munge',
            'CredType=cred/munge',
            f'AuthInfo=socket={self.munge_socket},cred_expire={CRED_EXPIRE_S}',
            'ProctrackType=proctrack/linuxproc',
            'TaskPlugin=task/none',
            'SelectType=select/cons_tres',
            'SelectTypeParameters=CR_CPU',
            'SchedulerType=sched/backfill',
            'SchedulerParameters=sched_interval=1',
            'MpiDefault=none',
            'ReturnToService=2',
            'JobAcctGatherType=jobacct_gather/none',
            'AccountingStorageType=accounting_storage/none',
            'JobCompType=jobcomp/none',
            f'KillWait={self.kill_wait_s}',
            'MinJobAge=600',
            f'StateSaveLocation={self.folder / "state"}',
            f'SlurmdSpoolDir={self.folder / "spool"}',
            f'SlurmctldPidFile={self.folder / "slurmctld.pid"}',
            f'SlurmdPidFile={self.folder / "slurmd.pid"}',
            f'SlurmctldLogFile={self.folder / "log" / "slurmctld.log"}',
            f'SlurmdLogFile={self.folder / "log" / "slurmd.log"}',
            f'NodeName={self.host} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} '
            f'RealMemory={int(memory_mb * 0.8)} State=UNKNOWN',
            'PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP',
        ]
        self.conf.write_text('\n'.join(lines) + '\n')
        key = self.folder / 'munge' / 'munge.key'
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.folder / 'log' / f'{name}.out', 'ab')  # noqa: SIM115 - closed in stop()
        self.processes[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env()},
            start_new_session=True,
        )
        log.close()

    def start(self, timeout_s: float = 60.0) -> SlurmCluster:
        """Start the daemons and wait until the node is idle; raise ``RuntimeError`` if not."""
        self._write_config()
        munge = self.folder / 'munge'
        self._spawn(
            'munged',
            [
                'munged',
                '--foreground',
                '--force',
                f'--socket={self.munge_socket}',
                f'--key-file={munge / "munge.key"}',
                f'--pid-file={munge / "munged.pid"}',
                f'--seed-file={munge / "munged.seed"}',
                f'--log-file={self.folder / "log" / "munged.log"}',
            ],
        )
        self._wait_for(self.munge_socket.exists, 'munged to open its socket', timeout_s)
        self._spawn('slurmctld', ['slurmctld', '-D', '-i', '-f', str(self.conf)])
        self._spawn('slurmd', ['slurmd', '-D', '-f', str(self.conf)])
        self._wait_for(self._node_idle, f'node {self.host} to become idle', timeout_s)
        return self

    def _node_idle(self) -> bool:
        result = self.run(['sinfo', '-h', '-N', '-o', '%T'], check=False)
        return result.returncode == 0 and result.stdout.strip() == 'idle'

    def _wait_for(self, condition, what: str, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            dead = [n for n, p in self.processes.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(
                    f'{", ".join(dead)} exited while waiting for {what}\n{self.logs()}'
                )
            if condition():
                return
            time.sleep(0.5)
        raise RuntimeError(f'timed out after {timeout_s:.0f} s waiting for {what}\n{self.logs()}')

    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        return subprocess.run(
            argv, capture_output=True, text=True, check=check, env={**os.environ, **self.env()}
        )

    def logs(self) -> str:
        """The tail of every daemon log, for failure messages."""
        parts = []
        for path in sorted((self.folder / 'log').glob('*')):
            lines = path.read_text(errors='replace').splitlines()[-15:]
            parts.append(f'--- {path.name}\n' + '\n'.join(lines))
        return '\n'.join(parts)

    def stop(self) -> None:
        """Cancel every job, then stop the daemons this object started (slurmd first), by PID.

        Job steps run in ``slurmstepd`` processes that outlive slurmd; cancelling the jobs first
        ends them, so no test leaves job processes behind.
        """
        if all(p.poll() is None for p in self.processes.values()) and self.processes:
            self.run(['scancel', '--full', '--user', 'root'], check=False)
            deadline = time.time() + 30
            while time.time() < deadline:
                queue = self.run(['squeue', '--noheader'], check=False)
                if queue.returncode != 0 or not queue.stdout.strip():
                    break
                time.sleep(0.5)
        for name in ('slurmd', 'slurmctld', 'munged'):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == '__main__':
    reason = missing_requirement()
    if reason:
        sys.exit(f'cannot start a cluster: {reason}')
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cluster = SlurmCluster(tmp).start()
        try:
            out = Path(tmp) / 'hello.out'
            cluster.run(['sbatch', f'--output={out}', '--wrap', 'hostname; echo hello'])
            deadline = time.time() + 60
            while time.time() < deadline and not (out.exists() and 'hello' in out.read_text()):
                time.sleep(0.5)
            print(out.read_text() if out.exists() else 'job did not run\n' + cluster.logs())
        finally:
            cluster.stop()
