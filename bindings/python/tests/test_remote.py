"""The remote tier from Python: its options (bad values raise ValueError naming the field) and
two Engines sharing blocks through a real Redis Cluster that this test starts on loopback.

The cluster: three redis-server masters on free 127.0.0.1 ports, in cluster mode, joined by
`redis-cli --cluster create`, their configs and logs in a temporary directory. The test
records the processes it started and stops exactly those (SIGTERM, a bounded wait, then
SIGKILL), never anything by name. Without redis-server / redis-cli on PATH the cluster tests
skip, saying so. Runs on the emulated device."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

import numpy as np

import kvtier

GEOMETRY = dict(layers=4, kv_heads=2, head_dim=16, dtype="fp16", block_tokens=16)
BLOCK_BYTES = 8192


def engine_options(**overrides):
    opts = dict(GEOMETRY, model="remote-test@1", host_tier_bytes=32 * BLOCK_BYTES,
                device="emulated", namespaces=["default"])
    opts.update(overrides)
    return opts


def prompt(n_blocks, seed):
    return (seed * 100003 + np.arange(n_blocks * 16)).astype(np.int32)


class RemoteOptions(unittest.TestCase):
    """Validation happens before any connection: no cluster needed."""

    def assert_refused(self, field, **remote):
        with self.assertRaises(ValueError) as cm:
            kvtier.Engine.open(**engine_options(**remote))
        self.assertIsInstance(cm.exception, kvtier.InvalidArgumentError)
        self.assertIn(field, str(cm.exception))

    def test_options_round_trip(self):
        o = kvtier.EngineOptions(**engine_options(
            remote_seeds=["127.0.0.1:7000", "127.0.0.1:7001"], remote_user="app",
            remote_password="pw", remote_op_timeout_s=1.5, remote_write_policy="both",
            remote_codec="zstd", remote_zstd_level=3, remote_admit_min_seen=2,
            remote_hmac_secrets={"default": b"\x00" * 8 + b"sixteen+"},
            remote_allow_unreachable=True))
        self.assertEqual(o.remote_seeds, ["127.0.0.1:7000", "127.0.0.1:7001"])
        self.assertEqual(o.remote_user, "app")
        self.assertAlmostEqual(o.remote_op_timeout_s, 1.5)
        self.assertAlmostEqual(o.remote_match_timeout_s, 0.05)  # the default
        self.assertEqual(o.remote_write_policy, "both")
        self.assertEqual(o.remote_hmac_secrets, {"default": b"\x00" * 8 + b"sixteen+"})
        self.assertTrue(o.remote_allow_unreachable)
        o.validate()
        # No seeds: no remote tier, nothing else about it is checked.
        self.assertEqual(kvtier.EngineOptions(**engine_options()).remote_seeds, [])

    def test_bad_values_name_the_field(self):
        seeds = dict(remote_seeds=["127.0.0.1:7000"])
        self.assert_refused("remote.seeds", remote_seeds=["no-port-here"])
        self.assert_refused("remote.seeds", remote_seeds=["127.0.0.1:70000"])
        self.assert_refused("remote.write_policy", remote_write_policy="write-back", **seeds)
        self.assert_refused("remote.connections_per_node", remote_connections_per_node=0,
                            **seeds)
        self.assert_refused("remote.io_threads", remote_io_threads=64, **seeds)
        self.assert_refused("remote.op_timeout", remote_op_timeout_s=0, **seeds)
        self.assert_refused("remote.match_timeout", remote_match_timeout_s=3600, **seeds)
        self.assert_refused("remote.codec", remote_codec="lz4", **seeds)
        self.assert_refused("remote.zstd_level", remote_zstd_level=40, **seeds)
        self.assert_refused("remote.max_inflight_bytes", remote_max_inflight_bytes=100, **seeds)
        self.assert_refused("remote.tls_ca_file", remote_tls=True, **seeds)
        self.assert_refused("remote.tls_cert_file", remote_tls=True, remote_tls_ca_file="/ca.pem",
                            remote_tls_cert_file="/c.pem", **seeds)
        self.assert_refused("remote.hmac_secrets", remote_hmac_secrets={"default": b"short"},
                            **seeds)
        with self.assertRaises(TypeError):  # not an option at all
            kvtier.Engine.open(**engine_options(remote_seed="127.0.0.1:7000"))

    def test_an_unreachable_cluster_fails_open_unless_allowed(self):
        # Port 1 on loopback refuses connections at once.
        down = engine_options(remote_seeds=["127.0.0.1:1"], remote_connect_timeout_s=0.2)
        with self.assertRaises(kvtier.UnavailableError) as cm:
            kvtier.Engine.open(**down)
        self.assertIn("127.0.0.1:1", str(cm.exception))
        with kvtier.Engine.open(**down, remote_allow_unreachable=True) as e:
            tokens = prompt(2, 5)
            self.assertEqual(e.match("default", tokens)[0], 0)
            self.assertEqual(e.stats()["remote"]["enabled"], 1)


def free_port():
    """A loopback port that is free, with its cluster bus port (port + 10000) free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair on 127.0.0.1")


class LocalCluster:
    """Three redis-server masters in cluster mode on 127.0.0.1, stopped by their PIDs."""

    def __init__(self, masters=3):
        self.redis_server = shutil.which("redis-server")
        self.redis_cli = shutil.which("redis-cli")
        self.dir = tempfile.mkdtemp(prefix="kvtier-py-redis-")
        self.procs = []  # the processes this object started, and only those
        self.ports = []
        try:
            self._start(masters)
        except BaseException:
            self.stop()
            raise

    def _cli(self, port, *args, timeout=10):
        return subprocess.run([self.redis_cli, "-h", "127.0.0.1", "-p", str(port), *args],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)

    def _log_tail(self, port):
        try:
            with open(os.path.join(self.dir, "%d.log" % port)) as f:
                return f.read()[-2000:]
        except OSError:
            return "(no log)"

    def _start(self, masters):
        for _ in range(masters):
            port = free_port()
            args = [self.redis_server, "--port", str(port), "--bind", "127.0.0.1",
                    "--protected-mode", "yes", "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes-%d.conf" % port,
                    "--cluster-node-timeout", "2000", "--dir", self.dir,
                    "--logfile", "%d.log" % port, "--save", "", "--appendonly", "no",
                    "--daemonize", "no", "--maxmemory", "256mb",
                    "--maxmemory-policy", "allkeys-lru"]
            self.procs.append(subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL, cwd=self.dir))
            self.ports.append(port)
        deadline = time.monotonic() + 20
        for port, proc in zip(self.ports, self.procs):
            while self._cli(port, "PING").stdout.strip() != "PONG":
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server on port %d did not start:\n%s"
                                       % (port, self._log_tail(port)))
                time.sleep(0.05)
        create = subprocess.run(
            [self.redis_cli, "--cluster", "create"] +
            ["127.0.0.1:%d" % p for p in self.ports] +
            ["--cluster-replicas", "0", "--cluster-yes"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if create.returncode != 0:
            raise RuntimeError("redis-cli --cluster create failed:\n%s%s"
                               % (create.stdout[-2000:], create.stderr[-2000:]))
        deadline = time.monotonic() + 30
        for port in self.ports:
            while "cluster_state:ok" not in self._cli(port, "CLUSTER", "INFO").stdout:
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not reach cluster_state:ok")
                time.sleep(0.1)

    @property
    def seeds(self):
        return ["127.0.0.1:%d" % p for p in self.ports]

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()  # SIGTERM to this process's own PID
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs = []
        shutil.rmtree(self.dir, ignore_errors=True)


class RemoteSharing(unittest.TestCase):
    cluster = None

    @classmethod
    def setUpClass(cls):
        missing = [b for b in ("redis-server", "redis-cli") if shutil.which(b) is None]
        if missing:
            raise unittest.SkipTest("%s not found on PATH: the remote tier's cluster tests need "
                                    "a local Redis (apt install redis-server redis-tools)"
                                    % " and ".join(missing))
        cls.cluster = LocalCluster()
        cls.addClassCleanup(cls.cluster.stop)

    def open(self, ns):
        return kvtier.Engine.open(**engine_options(
            namespaces=[ns], remote_seeds=self.cluster.seeds, remote_op_timeout_s=2.0,
            remote_match_timeout_s=0.5))  # generous: the machine may be busy

    def test_a_block_stored_by_one_engine_is_a_remote_hit_for_another(self):
        ns = "py-%d" % os.getpid()
        tokens = prompt(4, 7)
        rng = np.random.default_rng(7)
        bits = rng.integers(0, 1 << 16, size=(4, 4, 2, 16, 2, 16), dtype=np.uint16)
        with self.open(ns) as a, self.open(ns) as b:
            kv = bits.view(a.dtype)
            self.assertEqual(a.store(ns, tokens, kv)["stored"], 4)
            a.flush()  # write-through: the values are in the cluster
            self.assertEqual(a.stats()["remote"]["writes"], 4)

            # B never saw the prompt: every block is only in the remote tier.
            self.assertEqual(b.match_tiers(ns, tokens), ["remote"] * 4)
            n, keys = b.match(ns, tokens)
            self.assertEqual(n, 4 * 16)
            self.assertEqual(keys, a.block_keys(ns, tokens))
            back = b.load(ns, keys)
            self.assertEqual(back.view(np.uint16).tobytes(), bits.tobytes())  # byte-exact
            b.flush()
            self.assertEqual(b.match_tiers(ns, tokens), ["host"] * 4)

            s = b.stats()
            self.assertEqual(s["remote"]["enabled"], 1)
            self.assertEqual(s["remote"]["read_hits"], 4)
            self.assertEqual(s["remote"]["read_corrupt"], 0)
            self.assertEqual(s["tiers"]["remote"]["hits"], 4)
            self.assertEqual(s["remote"]["get_latency"]["count"], 4)
            nodes = s["remote"]["nodes"]
            self.assertEqual(set(nodes), set(self.cluster.seeds))
            self.assertEqual(sum(n["slots"] for n in nodes.values()), 16384)
            self.assertTrue(all(n["master"] == 1 for n in nodes.values()))

            # Erase on A reaches the cluster: a fresh engine finds nothing.
            a.erase_namespace(ns)
        with self.open(ns) as c:
            self.assertEqual(c.match(ns, tokens)[0], 0)


if __name__ == "__main__":
    unittest.main()
