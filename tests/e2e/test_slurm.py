"""The Slurm scripts on a real one-node Slurm (munge + slurmctld + slurmd, brought up by
slurm/local_cluster.sh): slurm/generate.sbatch with 4 tasks (TP=2 x PP=2 under srun --mpi=pmix)
writes one result per input id, the same results as the job under plain mpirun, as DP=2 x PP=2,
and as the script's mpirun variant; submitted again it resumes and runs nothing; a layout that
does not fit the job's tasks fails with one line; serve.sbatch and an array job with its merge.
And a Slurm on two test hosts (scripts/netns_cluster.sh, one slurmd in each host's namespace):
generate.sbatch on 2 nodes x 2 tasks equals the one-rank run, and tessera doctor under srun names
both hosts and the link between them."""
import json
import os
import shlex
import subprocess

import pytest

from conftest import records_by_key, MPI_ENV

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
NETNS = os.path.join(ROOT, "scripts", "netns_cluster.sh")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("slurm"))
    script = os.path.join(ROOT, "slurm", "local_cluster.sh")
    try:
        r = subprocess.run([script, "start", d], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        conf = r.stdout.strip().split("=", 1)[1]
        yield dict(MPI_ENV, SLURM_CONF=conf)
    finally:
        subprocess.run([script, "stop", d], timeout=60)


def requests_file(path, n=12):
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": "hello world " * (1 + i % 3),
                                        "max_tokens": 4 + i % 5, "ignore_eos": True}) + "\n"
                            for i in range(n)))


def sbatch(env, tessera, model, inp, out, log, tp, pp, *args, launch=None):
    job_env = dict(env, MODEL=model, INPUT=str(inp), OUTPUT=str(out), TP=str(tp), PP=str(pp),
                   TESSERA=tessera)
    if launch:
        job_env["LAUNCH"] = launch
    return subprocess.run(["sbatch", "--wait", "-n", "4", "--overcommit", "-o", str(log), *args,
                           os.path.join(ROOT, "slurm", "generate.sbatch")],
                          capture_output=True, text=True, env=job_env, timeout=600)


def records(path):
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_generate_sbatch_with_4_tasks_equals_mpirun_and_resumes(slurm, tessera, tiny_model,
                                                                tmp_path):
    inp, out, ref, log = (tmp_path / n for n in ("in.jsonl", "out.jsonl", "ref.jsonl", "job.log"))
    requests_file(inp)
    r = sbatch(slurm, tessera, tiny_model, inp, out, log, 2, 2)
    assert r.returncode == 0, r.stderr + log.read_text()
    # DP: two replicas of PP=2 split the same input; the same records.
    dp_out = tmp_path / "dp.jsonl"
    d = sbatch(slurm, tessera, tiny_model, inp, dp_out, tmp_path / "dp.log", 1, 2)
    assert d.returncode == 0, d.stderr + (tmp_path / "dp.log").read_text()
    assert "--dp 2 --tp 1 --pp 2" in (tmp_path / "dp.log").read_text()
    # The mpirun variant inside the job.
    mp_out = tmp_path / "mpirun.jsonl"
    v = sbatch(slurm, tessera, tiny_model, inp, mp_out, tmp_path / "mp.log", 2, 2, launch="mpirun")
    assert v.returncode == 0, v.stderr + (tmp_path / "mp.log").read_text()
    assert "4 ranks on 1 node(s): --dp 1 --tp 2 --pp 2 --sp 1" in log.read_text()
    assert "(tp 2, pp 2, sp 1" in log.read_text()
    got = records(out)
    assert sorted(got) == sorted(f"q{i}" for i in range(12))
    assert len(out.read_text().splitlines()) == 12  # one record per id
    m = subprocess.run(["mpirun", "-np", "4", tessera, "generate", "-m", tiny_model, "--tp", "2",
                        "--pp", "2", "-i", str(inp), "-o", str(ref)], capture_output=True,
                       text=True, env=MPI_ENV, timeout=300)
    assert m.returncode == 0, m.stderr
    assert got == records(ref) == records(dp_out) == records(mp_out)
    # The same job again: every request has a record, nothing runs, nothing is added.
    again = sbatch(slurm, tessera, tiny_model, inp, out, log, 2, 2)
    assert again.returncode == 0, again.stderr + log.read_text()
    assert "12 records there" in log.read_text() and "0 generated tokens" in log.read_text()
    assert len(out.read_text().splitlines()) == 12


def test_generate_sbatch_refuses_a_layout_that_is_not_the_jobs_tasks(slurm, tessera, tiny_model,
                                                                     tmp_path):
    inp, out, log = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "job.log"
    requests_file(inp, 2)
    r = sbatch(slurm, tessera, tiny_model, inp, out, log, 3, 1)
    assert r.returncode != 0
    assert "DP=1 x TP=3 x PP=1 x SP=1 is not the job's 4 tasks" in log.read_text()
    assert not out.exists()


def test_serve_sbatch_prints_where_to_reach_it_and_scancel_stops_it_cleanly(slurm, tessera,
                                                                             tiny_model,
                                                                             tmp_path):
    import socket
    import time
    import urllib.request
    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    env = dict(slurm, MODEL=tiny_model, TP="1", PP="2", HOST="127.0.0.1", PORT=str(port),
               TESSERA=tessera, TESSERA_ARGS="--served-model-name tiny --kv-cache-tokens 4096")
    r = subprocess.run(["sbatch", "--parsable", "-n", "2", "--overcommit", "-o", str(log),
                        os.path.join(ROOT, "slurm", "serve.sbatch")], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as h:
                    if h.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        text = log.read_text()
        assert f"the endpoint is http://" in text and f":{port}/v1" in text, text
        body = json.dumps({"model": "tiny", "prompt": "hello", "max_tokens": 5,
                           "ignore_eos": True}).encode()
        req = urllib.request.Request(url + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as a:
            assert json.loads(a.read())["usage"]["completion_tokens"] == 5
    finally:
        subprocess.run(["scancel", job], env=env, timeout=60)
    deadline = time.time() + 60
    while time.time() < deadline:
        q = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, env=env)
        if not q.stdout.strip():
            break
        time.sleep(0.5)
    assert not q.stdout.strip(), "the job is still there"
    text = log.read_text()
    assert "tessera: shut down after" in text, text


def test_an_array_job_splits_the_input_and_its_parts_merge_into_one_run(slurm, tessera,
                                                                        tiny_model, tmp_path):
    inp, out, ref = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "ref.jsonl"
    lines = [json.dumps({"id": f"q{i}", "prompt": "hello " * (1 + i % 4), "max_tokens": 3 + i % 4,
                         "ignore_eos": True}) for i in range(10)]
    lines.insert(4, "{broken")
    lines.insert(7, json.dumps({"id": "q1", "prompt": "again"}))  # a duplicate id
    inp.write_text("\n".join(lines) + "\n")
    env = dict(slurm, MODEL=tiny_model, INPUT=str(inp), OUTPUT=str(out), TP="1", PP="1",
               TESSERA=tessera, TESSERA_SLURM_DIR=os.path.join(ROOT, "slurm"))
    r = subprocess.run(["sbatch", "--wait", "--array=0-2", "-n", "1", "-o",
                        str(tmp_path / "job-%a.log"),
                        os.path.join(ROOT, "slurm", "generate_array.sbatch")],
                       capture_output=True, text=True, env=env, timeout=600)
    logs = "".join(p.read_text() for p in tmp_path.glob("job-*.log"))
    assert r.returncode == 0, r.stderr + logs
    parts = sorted(str(p) for p in tmp_path.glob("out.jsonl.part-*-of-3"))
    assert len(parts) == 3, logs
    sizes = [len(open(p).read().splitlines()) for p in parts]
    assert sizes == [4, 4, 4], sizes  # 12 lines, every third to each task
    merge = os.path.join(ROOT, "slurm", "merge_results.py")
    m = subprocess.run(["python3", merge, "--input", str(inp), "--output", str(out), *parts],
                       capture_output=True, text=True, timeout=60)
    assert m.returncode == 0, m.stderr
    assert "12 records from 3 parts" in m.stdout
    whole = subprocess.run([tessera, "generate", "-m", tiny_model, "-i", str(inp), "-o", str(ref)],
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr

    keyed = records_by_key

    assert keyed(out) == keyed(ref)
    # A part missing: the merge refuses, naming what is missing, and writes nothing new.
    out.unlink()
    bad = subprocess.run(["python3", merge, "--input", str(inp), "--output", str(out), *parts[:2]],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "4 input lines have no record" in bad.stderr
    assert not out.exists()


@pytest.fixture(scope="module")
def slurm_hosts(tmp_path_factory):
    """Two test hosts NAME-h1, NAME-h2 with a slurmd each (slurmctld in NAME-h1); the hosts are
    removed at the end, and checked to be gone."""
    name = f"ts{os.getpid() % 100000}"
    d = tmp_path_factory.mktemp("slurm_hosts")
    script = os.path.join(ROOT, "slurm", "local_cluster.sh")
    try:
        up = subprocess.run([NETNS, "up", "2", name], capture_output=True, text=True, timeout=60)
        assert up.returncode == 0, up.stderr
        r = subprocess.run([script, "start", str(d), "--hosts", name], capture_output=True,
                           text=True, timeout=120)
        logs = "".join(f.read_text() for f in d.glob("*.log"))
        assert r.returncode == 0, r.stderr + logs
        conf = r.stdout.strip().split("=", 1)[1]
        # hosts share this machine's cores: a rank spinning in a collective yields them
        yield name, dict(MPI_ENV, SLURM_CONF=conf, OMPI_MCA_mpi_yield_when_idle="1")
    finally:
        try:
            subprocess.run([script, "stop", str(d)], timeout=60)
        finally:
            down = subprocess.run([NETNS, "down", name], capture_output=True, text=True,
                                  timeout=60)
    assert down.returncode == 0, down.stderr
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert not [ns for ns in left if ns.startswith(name + "-")], left
    assert not [f for f in (os.listdir("/etc/netns") if os.path.isdir("/etc/netns") else [])
                if f.startswith(name + "-")], "its /etc/netns files are left"


def link_bytes(name, host):
    """Bytes received plus sent on a host's link, as its own namespace counts them."""
    out = subprocess.run(["ip", "-n", f"{name}-{host}", "-s", "-j", "link", "show", "eth0"],
                         capture_output=True, text=True, check=True).stdout
    stats = json.loads(out)[0]["stats64"]
    return stats["rx"]["bytes"] + stats["tx"]["bytes"]


def in_host(name, host, command, env, timeout=300):
    """A shell command line inside a test host (where the cluster's daemons are reached)."""
    return subprocess.run([NETNS, "exec", f"{name}-{host}", shlex.join(command)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def commands_in(namespace):
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True,
                          check=True).stdout.split()
    names = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass  # (ended meanwhile)
    return names


def test_generate_sbatch_on_two_hosts_equals_one_rank(slurm_hosts, tessera, tiny_model,
                                                      tmp_path):
    name, env = slurm_hosts
    assert "slurmctld" in commands_in(f"{name}-h1")
    for host in ("h1", "h2"):
        assert "slurmd" in commands_in(f"{name}-{host}"), f"no slurmd inside {name}-{host}"
    inp, out, ref, log = (tmp_path / n for n in ("in.jsonl", "out.jsonl", "ref.jsonl", "job.log"))
    requests_file(inp)
    job_env = dict(env, MODEL=tiny_model, INPUT=str(inp), OUTPUT=str(out), TESSERA=tessera)
    before = link_bytes(name, "h2")
    r = in_host(name, "h1", ["sbatch", "--wait", "-N", "2", "--ntasks-per-node", "2",
                             "--overcommit", "-o", str(log),
                             os.path.join(ROOT, "slurm", "generate.sbatch")], job_env)
    assert r.returncode == 0, r.stderr + (log.read_text() if log.exists() else "")
    # by default TP spans a node's tasks and PP the nodes
    assert "4 ranks on 2 node(s): --dp 1 --tp 2 --pp 2 --sp 1" in log.read_text()
    # (Slurm's own messages cross too, a few KB: the hidden states of 12 requests are more)
    crossed = link_bytes(name, "h2") - before
    print(f"{crossed} bytes crossed h2's link")
    assert crossed > 50_000, f"only {crossed} bytes crossed h2's link"
    one = subprocess.run([tessera, "generate", "-m", tiny_model, "-i", str(inp), "-o", str(ref)],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    assert len(out.read_text().splitlines()) == 12
    assert records(out) == records(ref)


def test_doctor_under_srun_names_both_hosts_and_their_link(slurm_hosts, tessera, tiny_model):
    name, env = slurm_hosts
    r = in_host(name, "h1", ["srun", "-N", "2", "-n", "4", "--overcommit", tessera, "doctor",
                             "-m", tiny_model, "--tp", "2", "--pp", "2"], env)
    assert r.returncode == 0, r.stderr
    ranks = {int(line.split()[0]): line.split()[1] for line in r.stdout.splitlines()
             if line[:1].isdigit()}
    assert ranks == {0: f"{name}-h1", 1: f"{name}-h1", 2: f"{name}-h2", 3: f"{name}-h2"}, r.stdout
    link = next((line for line in r.stdout.splitlines()
                 if line.startswith(f"{name}-h1") and f"{name}-h2 (rank 2)" in line), None)
    assert link is not None, r.stdout
    fields = link.split()  # host, host, (rank, 2), latency, us, bandwidth, unit
    assert fields[5] == "us" and float(fields[4]) > 0, link
    assert fields[7].endswith("B/s") and float(fields[6]) > 0, link
