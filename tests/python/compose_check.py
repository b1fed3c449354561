"""Reads docker-compose.yml as Docker Compose would (YAML) and checks what a working stack
needs: three shards with health checks and prepared transactions, the proxy waiting for them
healthy and restarted on failure, a readiness health check, Prometheus scraping the proxy's
metrics port, and a config whose shards are the compose services. Prints the proxy config's
path on the host, for `shardgate check-config`."""
import os
import pathlib
import tomllib

import yaml

root = pathlib.Path(os.environ["SHARDGATE_ROOT"])
compose = yaml.safe_load((root / "docker-compose.yml").read_text())
services = compose["services"]

shards = [name for name in services if name.startswith("shard") and name != "shardgate"]
assert len(shards) == 3, shards
for name in shards:
    s = services[name]
    assert s["healthcheck"]["test"][1] == "pg_isready", name
    assert any("max_prepared_transactions" in part for part in s["command"]), name
    assert s.get("restart"), name

proxy = services["shardgate"]
assert proxy["build"] == "." and (root / "Dockerfile").exists()
assert "target/" in (root / ".dockerignore").read_text()
assert proxy["restart"] in ("on-failure", "unless-stopped", "always"), proxy["restart"]
for name in shards:
    assert proxy["depends_on"][name]["condition"] == "service_healthy", name
assert "/readyz" in " ".join(proxy["healthcheck"]["test"])
mounts = dict(v.split(":")[:2] for v in proxy["volumes"])
config_host = root / [h for h, c in mounts.items() if c == "/etc/shardgate/shardgate.toml"][0]
config = tomllib.loads(config_host.read_text())

# Every shard URL names a compose service, on PostgreSQL's port.
for shard in config["shards"]:
    host_port = shard["url"].split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    assert host in shards and port == "5432", shard["url"]

metrics_port = config["metrics"]["listen"].rsplit(":", 1)[1]
published = [p.split(":")[0] for p in proxy["ports"]]
assert config["server"]["listen"].rsplit(":", 1)[1] in published
assert metrics_port in published

prometheus = services["prometheus"]
prom_mounts = dict(v.split(":")[:2] for v in prometheus["volumes"])
prom_host = root / [h for h, c in prom_mounts.items() if c.endswith("prometheus.yml")][0]
prom = yaml.safe_load(prom_host.read_text())
targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
assert f"shardgate:{metrics_port}" in targets, targets

print(f"config: {config_host}")
