"""SLURM for real: launch/slurm.sbatch on a one-node cluster on this machine.

The module starts munged, slurmctld and slurmd (Debian's `munge` and
`slurm-wlm` packages, which .ci/run installs) from a generated munge key and
slurm.conf in a temporary folder, on localhost, with one partition without
GPUs, and stops them at the end. Through `sbatch --wait`: 2 tasks x 2 CPU
devices train as 1 process x 4 devices (as the launch/local.sh test), a
sweep runs as a job array (one point per array task) followed by its
summary, and the launcher's process modes behave on a partition without
GPUs. It skips, saying why, where SLURM is not installed, the tests do not
run as root (slurmd launches jobs as their user) or the daemons do not
start.
"""

import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from aad import summary
from aad import sweep
from configs import test_sweep

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMANDS = ('munged', 'slurmctld', 'slurmd', 'sbatch', 'sinfo', 'squeue',
            'scancel')

# Debian 12's Slurm 22.05 in a container without systemd, all as root:
# - processes are tracked by their parents (linuxproc) and not bound or
#   limited (task/none, no accounting), so no cgroup is needed;
# - munge authenticates, through a private munged on a socket of its own;
#   auth/none (still in 22.05) would let any local user submit jobs as root;
# - node and controller are "localhost", which always resolves: JAX's
#   coordinator is the first node of the job step, by name;
# - MinJobAge=4 keeps `sbatch --wait` polling every 2 s (it backs off up to
#   32 s while below half the MinJobAge, 300 s by default);
# - config_overrides: slurmd takes the CPU count given, at least 2 for the
#   2-task jobs, even on a machine with fewer;
# - every path is in the cluster's folder, ports are free ones.
SLURM_CONF = """\
ClusterName=aadtest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=4
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _wait_for(condition, seconds: float) -> bool:
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    if condition():
      return True
    time.sleep(0.2)
  return condition()


# What the daemons log as errors on every start here (no PMIx library,
# no state saved yet): not why a start failed.
_NOISE = ('pmix', 'MPI:', 'state file', 'Trying backup')


def _why(path: pathlib.Path) -> str:
  """A daemon's first fatal or error line, else its last line."""
  lines = path.read_text(errors='replace').split('\n') if path.exists() else []
  lines = [l.strip() for l in lines if l.strip()]
  for level in ('fatal:', 'error:'):
    for line in lines:
      if level in line and not any(n in line for n in _NOISE):
        return line
  return (lines or ['(no output)'])[-1]


class Cluster:
  """munged, slurmctld and slurmd on localhost, all files under `root`."""

  def __init__(self, root: pathlib.Path):
    self.root = root
    self.conf = root / 'slurm.conf'
    self._daemons: list[subprocess.Popen] = []
    self._up = False

  def env(self, **extra: str) -> dict[str, str]:
    """This process's environment for the clients (and, exported, jobs)."""
    env = dict(os.environ, PYTHON=sys.executable)
    env.update(extra)
    # Nothing from a job this process may itself run in (SLURM_JOB_ID...).
    env = {k: v for k, v in env.items() if not k.startswith(
        ('SLURM_', 'SBATCH_', 'SRUN_', 'SALLOC_'))}
    env.pop('JAX_COORDINATOR_ADDRESS', None)
    env['SLURM_CONF'] = str(self.conf)
    return env

  def _start(self, name: str, *args: str) -> subprocess.Popen:
    # In the foreground (-D, -F): the daemon is our child and we hold its
    # pid; it logs to root/<name>.out.
    log = open(self.root / f'{name}.out', 'w')  # pylint: disable=consider-using-with
    with log:
      proc = subprocess.Popen([name, *args], stdout=log,
                              stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL,
                              env=self.env(), start_new_session=True)
    self._daemons.append(proc)
    return proc

  def start(self) -> str | None:
    """Starts the daemons; returns why they did not start, or None."""
    for d in ('state', 'spool'):
      (self.root / d).mkdir()
    key = self.root / 'munge.key'
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)  # munged refuses a key that others can read
    socket_path = self.root / 'munge.socket'
    # --force: pytest's folders are private (0700), and munged wants its
    # socket's folder open to all users; only root uses it here.
    munged = self._start(
        'munged', '-F', '--force', f'--key-file={key}',
        f'--socket={socket_path}', f'--pid-file={self.root}/munged.pid',
        f'--seed-file={self.root}/munged.seed')
    if not _wait_for(lambda: socket_path.exists() or munged.poll() is not None,
                     10) or munged.poll() is not None:
      return f'munged did not start: {_why(self.root / "munged.out")}'
    # 2 CPUs at least, for the 2-task jobs (config_overrides lets slurmd
    # accept more than the machine has).
    cpus = max(2, len(os.sched_getaffinity(0)))
    for _ in range(3):
      self.conf.write_text(SLURM_CONF.format(
          root=self.root, ctld_port=_free_port(), slurmd_port=_free_port(),
          cpus=cpus))
      daemons = [self._start('slurmctld', '-D', '-f', str(self.conf)),
                 self._start('slurmd', '-D', '-N', 'localhost', '-f',
                             str(self.conf))]

      def any_exited(daemons=daemons):
        return any(d.poll() is not None for d in daemons)

      _wait_for(lambda: any_exited() or self._node_state() == 'idle', 30)
      if not any_exited() and self._node_state() == 'idle':
        self._up = True
        return None
      reason = (f'slurmctld: {_why(self.root / "slurmctld.out")}; '
                f'slurmd: {_why(self.root / "slurmd.out")}')
      # A daemon that exited may have lost a port picked free to another
      # process before it bound it: retry with other ports.
      retry = any_exited()
      for d in daemons:
        self._stop(d)
      if not retry:
        break
    return f'SLURM did not start: {reason}'

  def _node_state(self) -> str:
    result = subprocess.run(['sinfo', '-h', '-N', '-o', '%T'],
                            env=self.env(), capture_output=True, text=True,
                            timeout=30, check=False)
    return result.stdout.strip()

  def sbatch(self, options: list[str], args: list[str], env: dict[str, str],
             timeout: float = 600) -> subprocess.CompletedProcess:
    """sbatch OPTIONS launch/slurm.sbatch ARGS, from the repository."""
    return subprocess.run(['sbatch', *options, 'launch/slurm.sbatch', *args],
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)

  def _jobs(self) -> list[str]:
    try:
      result = subprocess.run(['squeue', '-h', '-o', '%A'], env=self.env(),
                              capture_output=True, text=True, timeout=30,
                              check=False)
    except subprocess.TimeoutExpired:
      return []  # no controller to ask: stop() still kills what is left
    return result.stdout.split()

  def _leftovers(self) -> list[int]:
    """Pids of processes run for this cluster: job steps and their tasks.

    slurmstepd and the jobs have their own sessions, not ours; what marks
    them is this cluster's SLURM_CONF in their environment.
    """
    marker = f'SLURM_CONF={self.conf}'.encode()
    pids = []
    for proc in pathlib.Path('/proc').iterdir():
      if not proc.name.isdigit() or int(proc.name) == os.getpid():
        continue
      with contextlib.suppress(OSError):
        if marker in (proc / 'environ').read_bytes().split(b'\0'):
          pids.append(int(proc.name))
    return pids

  def _stop(self, proc: subprocess.Popen) -> None:
    if proc.poll() is None:
      proc.terminate()
      try:
        proc.wait(timeout=15)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

  def stop(self) -> None:
    """Cancels every job, stops the daemons, kills what may remain."""
    jobs = self._jobs() if self._up else []
    if jobs:
      with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(['scancel', '--full', *jobs], env=self.env(),
                       capture_output=True, timeout=30, check=False)
      _wait_for(lambda: not self._jobs(), 30)
    for proc in reversed(self._daemons):  # slurmd, slurmctld, then munged
      self._stop(proc)
    for pid in self._leftovers():
      with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    # The key is the cluster's only secret; the logs stay with pytest's
    # temporary folders.
    with contextlib.suppress(FileNotFoundError):
      (self.root / 'munge.key').unlink()
    shutil.rmtree(self.root / 'spool', ignore_errors=True)


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
  missing = [c for c in COMMANDS if not shutil.which(c)]
  if missing:
    pytest.skip(f'SLURM is not installed (no {", ".join(missing)}): '
                'apt-get install slurm-wlm munge, as .ci/run does')
  if os.geteuid() != 0:
    pytest.skip('the SLURM test runs its daemons as root (slurmd starts '
                'jobs as their user); these tests do not run as root')
  c = Cluster(tmp_path_factory.mktemp('slurm'))
  try:
    reason = c.start()
    if reason:
      pytest.skip(reason)
    yield c
  finally:
    c.stop()


def test_two_tasks_of_two_devices_match_one_process_of_four(
    cluster, tiny_launch, tmp_path):
  # As README's command line: AAD_CPU_DEVICES gives each task 2 devices.
  # JAX picks its coordinator's port from the job id, the same for every
  # fresh cluster; a free port keeps two test sessions apart.
  env = cluster.env(**{**tiny_launch.env(2), 'AAD_CPU_DEVICES': '2',
                       'JAX_COORDINATOR_PORT': str(_free_port())})
  del env['XLA_FLAGS']
  out = tmp_path / 'job.out'
  job = cluster.sbatch(
      ['--wait', '--nodes=1', '--ntasks-per-node=2', f'--output={out}'],
      tiny_launch.flags(tmp_path / '2x2'), env=env)
  log = out.read_text() if out.exists() else ''
  assert job.returncode == 0, job.stderr + log[-3000:]
  for i in (0, 1):
    assert f'Process {i} of 2; 2 local and 4 global devices' in log
  assert len(re.findall(r'Report: ', log)) == 1  # process 0 only

  single_workdir, _ = tiny_launch.reference
  loss_2x2 = tiny_launch.losses(tmp_path / '2x2')
  loss_1x4 = tiny_launch.losses(single_workdir)
  print('loss SLURM 2 tasks x 2 devices:', loss_2x2.tolist())
  print('loss 1 process x 4 devices:    ', loss_1x4.tolist())
  assert loss_1x4.shape == (3,) and np.all(np.diff(loss_1x4) != 0)
  np.testing.assert_allclose(loss_2x2, loss_1x4, rtol=1e-5)


def test_a_sweep_runs_as_a_job_array_then_its_summary(
    cluster, textures_dir, tmp_path):
  root = tmp_path / 'sweep'
  flags = ['--config=configs/test_sweep.py', f'--workdir={root}',
           '--config.sweep.seed=(0,)',  # 2 points: stain, gaussian
           f'--config.dataset.data_dir={textures_dir}',
           '--config.train.num_steps=2', '--config.train.eval_every=2',
           '--config.eval.mc_samples=2', '--config.eval.batch_size=112']
  env = cluster.env(AAD_MODULE='aad.sweep', JAX_DISABLE_MOST_OPTIMIZATIONS='1',
                    XLA_FLAGS='--xla_force_host_platform_device_count=1')
  array = cluster.sbatch(['--parsable', '--array=0-1', '--ntasks=1',
                          f'--output={tmp_path}/point-%a.out'], flags, env)
  assert array.returncode == 0, array.stderr
  job_id = array.stdout.strip().split(';')[0]
  # The summary waits for every point; if one fails, it is cancelled.
  summary_job = cluster.sbatch(
      ['--wait', f'--dependency=afterok:{job_id}', '--kill-on-invalid-dep=yes',
       '--ntasks=1', f'--output={tmp_path}/summary.out'],
      [f'--workdir={root}'], dict(env, AAD_MODULE='aad.summary'))
  logs = {p.name: p.read_text() for p in tmp_path.glob('*.out')}
  assert summary_job.returncode == 0, (summary_job.stderr, logs)

  config = test_sweep.get_config()
  config.sweep.seed = (0,)
  names = [p.name for p in sweep.expand(config)]
  assert names == ['corruption.name=stain_seed=0',
                   'corruption.name=gaussian_seed=0']
  for i, name in enumerate(names):  # array task i ran point i, only
    assert f'Sweep point {i + 1}/2: {name}' in logs[f'point-{i}.out']
    assert logs[f'point-{i}.out'].count('Sweep point ') == 1
    assert (root / name / 'metrics.json').exists()
  header, rows = summary.gather(str(root))  # a row per point and scorer
  scorers = ['baseline_mean', 'mc_variance', 'residual']
  assert [r[0] for r in rows] == [n for n in names for _ in scorers]
  assert [r[header.index('scorer')] for r in rows] == scorers * 2
  assert {r[-1] for r in rows} == {'done'}
  auroc = header.index('image AUROC')
  for row in rows:
    metrics = json.loads((root / row[0] / 'metrics.json').read_text())
    scorer = row[header.index('scorer')]
    assert row[auroc] == f'{metrics[f"mean/{scorer}/l2/image_auroc"]:.3f}'
  table = (root / 'summary.md').read_text()
  assert logs['summary.out'] == table  # printed once, as written
  print(table)


def test_process_modes_on_a_partition_without_gpus(cluster, tmp_path):
  # A dry run of a sweep prints its points once per process, without JAX.
  flags = ['--config=configs/test_sweep.py', f'--workdir={tmp_path}',
           '--dry_run']
  env = cluster.env(AAD_MODULE='aad.sweep')
  jobs = {}
  for mode in ('node', 'gpu'):
    jobs[mode] = subprocess.Popen(
        ['sbatch', '--wait', '--nodes=1', '--ntasks-per-node=2',
         f'--output={tmp_path}/{mode}.out', 'launch/slurm.sbatch', *flags],
        cwd=REPO, env=dict(env, AAD_PROCESS_PER=mode), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  results = {}
  try:
    for mode, job in jobs.items():
      _, stderr = job.communicate(timeout=120)
      results[mode] = (job.returncode, stderr)
  finally:
    for job in jobs.values():
      if job.poll() is None:
        job.kill()
        job.wait()
  logs = {mode: (tmp_path / f'{mode}.out').read_text() for mode in jobs}
  # One process per node, although the job has 2 tasks on it.
  assert results['node'][0] == 0, (results['node'], logs['node'])
  assert logs['node'].count('4 runs under') == 1
  # Asked for a process per GPU on a node without: one line, status 2.
  assert results['gpu'][0] == 2, (results['gpu'], logs['gpu'])
  assert logs['gpu'].strip().splitlines() == [
      'launch/slurm.sbatch: AAD_PROCESS_PER=gpu but the job has no GPUs: ask '
      'sbatch for --gpus-per-node=N (or set SBATCH_GPUS_PER_NODE=N), or use '
      'AAD_PROCESS_PER=task on CPUs.']
