"""Engine.stats() against kvtier.stats_schema(): every statistic the schema describes is in the
dict, where its group says, with the right type, and the dict holds nothing else. Runs on the
emulated device."""

import unittest

import numpy as np

import kvtier

TIERS = ("gpu", "host", "disk", "remote")
# Keys the dict nests statistics under; everything else is a statistic's name.
CONTAINERS = {"prefetch", "tiers", "namespaces", "remote"}


def open_engine():
    return kvtier.Engine.open(layers=4, kv_heads=2, head_dim=16, dtype="fp16", block_tokens=16,
                              model="stats-test@1", host_tier_bytes=16 * 8192,
                              device="emulated", namespaces=["default", "tenant-b"])


def values_of(stats, entry):
    """(where, value) for every value of the schema entry in the stats dict."""
    name, group = entry["name"], entry["group"]
    if group in ("info", "engine", "latency"):
        return [(name, stats[name])]
    if group == "prefetch":
        return [("prefetch/" + name, stats["prefetch"][name])]
    if group == "tier":
        return [("tiers/%s/%s" % (t, name), stats["tiers"][t][name]) for t in TIERS]
    if group == "remote":
        return [("remote/" + name, stats["remote"][name])]
    if group == "remote_node":
        return [("remote/nodes/%s/%s" % (node, name), figures[name])
                for node, figures in stats["remote"]["nodes"].items()]
    out = []
    for ns, figures in stats["namespaces"].items():
        if group == "namespace":
            out.append(("namespaces/%s/%s" % (ns, name), figures[name]))
        else:
            assert set(figures[name]) == set(TIERS), (name, figures[name])
            out += [("namespaces/%s/%s/%s" % (ns, name, t), figures[name][t]) for t in TIERS]
    return out


class StatsSchema(unittest.TestCase):
    def test_the_schema_describes_each_statistic(self):
        schema = kvtier.stats_schema()
        self.assertGreater(len(schema), 40)
        groups = {"info", "engine", "prefetch", "latency", "tier", "namespace", "namespace_tier",
                  "remote", "remote_node"}
        for entry in schema:
            self.assertEqual(set(entry), {"name", "group", "kind", "unit", "labels", "metric",
                                          "help", "derived"})
            self.assertIn(entry["group"], groups)
            self.assertIn(entry["kind"], {"counter", "gauge", "histogram", "label"})
            self.assertTrue(entry["metric"].startswith("kvtier_"), entry)
            self.assertTrue(entry["help"], entry)
            self.assertEqual("tier" in entry["labels"], entry["group"].endswith("tier"))
            self.assertEqual("namespace" in entry["labels"], entry["group"].startswith("namespace"))
            self.assertEqual("node" in entry["labels"], entry["group"] == "remote_node")
        names = [(e["group"], e["name"]) for e in schema]
        self.assertEqual(len(names), len(set(names)))
        self.assertIn(("tier", "checksum_failures"), names)
        self.assertIn(("prefetch", "in_time"), names)
        self.assertIn(("remote", "read_bad_mac"), names)
        self.assertIn(("remote_node", "breaker_open"), names)

    def test_every_statistic_is_in_the_stats_dict_and_nothing_else(self):
        with open_engine() as e:
            tokens = (np.arange(3 * 16) + 7).astype(np.int32)
            rng = np.random.default_rng(3)
            kv = rng.standard_normal((3,) + e.block_shape).astype(e.dtype)
            e.store("tenant-b", tokens, kv)
            _, keys = e.match("tenant-b", tokens)
            e.load("tenant-b", keys[:2])
            stats = e.stats()

        schema = kvtier.stats_schema()
        seen = set()
        for entry in schema:
            values = values_of(stats, entry)
            # Node statistics have no values without a remote tier (no nodes).
            self.assertTrue(values or entry["group"] == "remote_node", entry["name"])
            for where, value in values:
                seen.add(where)
                if entry["kind"] == "label":
                    self.assertIsInstance(value, str, where)
                elif entry["kind"] == "histogram":
                    self.assertEqual(set(value), {"count", "sum_ns", "buckets"}, where)
                    self.assertEqual(len(value["buckets"]), 24, where)
                    self.assertEqual(sum(value["buckets"]), value["count"], where)
                else:
                    self.assertIsInstance(value, int, where)
                    self.assertGreaterEqual(value, 0, where)

        # Nothing in the dict that the schema does not describe.
        def leaves(d, prefix=""):
            for k, v in d.items():
                path = prefix + k
                if k in CONTAINERS and not prefix:
                    if k == "prefetch":
                        yield from leaves(v, "prefetch/")
                    elif k == "remote":
                        nodes = v.get("nodes", {})
                        for address, inner in nodes.items():
                            yield from leaves(inner, "remote/nodes/%s/" % address)
                        yield from leaves({n: x for n, x in v.items() if n != "nodes"}, "remote/")
                    else:
                        for label, inner in v.items():
                            yield from leaves(inner, "%s/%s/" % (k, label))
                elif isinstance(v, dict) and set(v) == set(TIERS):
                    for t in TIERS:
                        yield "%s/%s" % (path, t)
                else:
                    yield path

        self.assertEqual(set(leaves(stats)), seen)

        # And the values are this engine's.
        self.assertEqual(stats["block_bytes"], 8192)
        self.assertEqual(stats["stored_blocks"], 3)
        self.assertEqual(stats["loaded_blocks"], 2)
        self.assertEqual(stats["match_latency"]["count"], 1)
        host = stats["tiers"]["host"]
        self.assertEqual(host["used_bytes"], host["used_blocks"] * 8192)
        self.assertEqual(host["hits"], 2)
        ns = stats["namespaces"]["tenant-b"]
        self.assertEqual(ns["blocks_per_tier"]["host"], 3)
        self.assertEqual(ns["hits_per_tier"]["host"], 2)
        self.assertEqual(ns["quota_blocks"], {"gpu": 0, "host": 0, "disk": 0, "remote": 0})
        # No remote tier: its figures are there, and zero.
        self.assertEqual(stats["remote"]["enabled"], 0)
        self.assertEqual(stats["remote"]["nodes"], {})
        self.assertEqual(stats["tiers"]["remote"]["hits"], 0)
        self.assertEqual(stats["remote"]["get_latency"]["count"], 0)
        self.assertEqual(stats["namespaces"]["default"]["stored_blocks"], 0)


if __name__ == "__main__":
    unittest.main()
