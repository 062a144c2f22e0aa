#!/usr/bin/env python3
"""Writes src/http/openapi.json, the OpenAPI 3.1 description of the admin API.

The document is data, checked against the real router by tests/openapi.rs (every
operation it lists is routed, every route is listed); this script is how it is edited:
change the table below and run `scripts/gen-openapi.py`.
"""
import json, os

C = {"name": "cluster", "in": "path", "required": True, "description": "A cluster name (PROTOCOL.md §6).", "schema": {"type": "string"}}
P = {"name": "proxy", "in": "path", "required": True, "description": "A proxy's identity, `HOST:PORT` (IPv6 as `[ADDR]:PORT`, percent-encoded).", "schema": {"type": "string"}}
HG = {"name": "hostgroup", "in": "path", "required": True, "schema": {"type": "string"}}
V = {"name": "version", "in": "path", "required": True, "description": "A version number, or `current`.", "schema": {"type": "string"}}
def q(name, desc, typ="string"):
    return {"name": name, "in": "query", "required": False, "description": desc, "schema": {"type": typ}}

JSON = "application/json"
TEXT = "text/plain"
# (method, path, operationId, summary, params, request body type or None, answer type, tags)
OPS = [
  ("get", "/", "index", "What this API is and where its parts are (the same as GET /v1).", [], None, JSON, "meta"),
  ("get", "/v1", "indexV1", "The API index: the release, the documents, every operation.", [], None, JSON, "meta"),
  ("get", "/v1/openapi.json", "openapi", "This document.", [], None, JSON, "meta"),
  ("get", "/livez", "livez", "`ok` while the process runs.", [], None, TEXT, "health"),
  ("get", "/readyz", "readyz", "This keeper can serve: `ok` while its keeper task answers; a standby answers 200 naming the leader. A mass loss does not make it unready.", [], None, TEXT, "health"),
  ("get", "/v1/health", "health", "`{\"status\": \"ok\"}`, or 503 `mass-loss` naming the clusters in mass loss.", [], None, JSON, "health"),
  ("get", "/metrics", "metrics", "Metrics: OpenMetrics if asked for in `Accept`, the classic text format otherwise.", [], None, TEXT, "health"),
  ("get", "/v1/version", "version", "The keeper's release and the heartbeat protocol versions it speaks.", [], None, JSON, "meta"),
  ("get", "/v1/store", "store", "The store's generation and revision, the keeper's epoch and role.", [], None, JSON, "meta"),
  ("get", "/v1/snapshot", "snapshot", "A backup of the store, made while the keeper serves: a store file (`zerokeeper snapshot save`); needs an admin token of the whole fleet once tokens are set; 409 `snapshot-unsupported` on etcd.", [], None, "application/vnd.zerokeeper.snapshot", "meta"),
  ("get", "/v1/clusters", "listClusters", "Every cluster: counts, gate, config version, rollout, deletion paused, frozen.", [], None, JSON, "clusters"),
  ("get", "/v1/clusters/{cluster}", "getCluster", "One cluster.", [C], None, JSON, "clusters"),
  ("delete", "/v1/clusters/{cluster}", "deleteCluster", "Deletes a cluster with no registered proxy (409 `cluster-not-empty` otherwise).", [C], None, JSON, "clusters"),
  ("post", "/v1/clusters/{cluster}/freeze", "freezeCluster", "Freezes a cluster: no proxy of it is deleted or restarted.", [C], None, JSON, "clusters"),
  ("post", "/v1/clusters/{cluster}/unfreeze", "unfreezeCluster", "Unfreezes a cluster (fresh deletion windows).", [C], None, JSON, "clusters"),
  ("get", "/v1/clusters/{cluster}/gate", "getGate", "Whether push config and switch may run, and the blockers if not.", [C], None, JSON, "clusters"),
  ("get", "/v1/clusters/{cluster}/hostgroups", "listHostgroups", "The cluster's declared hostgroups.", [C], None, JSON, "hostgroups"),
  ("put", "/v1/clusters/{cluster}/hostgroups/{hostgroup}", "setHostgroup", "Declares a hostgroup: body `{\"datasources\": [...], \"current\": \"...\"}`.", [C, HG], JSON, JSON, "hostgroups"),
  ("delete", "/v1/clusters/{cluster}/hostgroups/{hostgroup}", "deleteHostgroup", "Undeclares a hostgroup declared through the API.", [C, HG], None, JSON, "hostgroups"),
  ("get", "/v1/proxies", "listProxies", "Every proxy of every cluster.", [], None, JSON, "proxies"),
  ("get", "/v1/clusters/{cluster}/proxies", "listClusterProxies", "The proxies of one cluster.", [C], None, JSON, "proxies"),
  ("get", "/v1/clusters/{cluster}/proxies/{proxy}", "getProxy", "One proxy.", [C, P], None, JSON, "proxies"),
  ("delete", "/v1/clusters/{cluster}/proxies/{proxy}", "removeProxy", "Removes a proxy; one that is up or ready only with `force=true` (409 `proxy-alive` otherwise).", [C, P, q("force", "Remove a live proxy too (it is told to leave).", "boolean")], None, JSON, "proxies"),
  ("get", "/v1/keys", "listKeys", "The seed's status lines of every proxy, sorted.", [], None, TEXT, "proxies"),
  ("get", "/v1/clusters/{cluster}/keys", "listClusterKeys", "The seed's status lines of one cluster.", [C], None, TEXT, "proxies"),
  ("get", "/v1/clusters/{cluster}/rollout", "getRollout", "The rollout of the current config: who runs it, who does not yet, who rejected it.", [C], None, JSON, "config"),
  ("get", "/v1/clusters/{cluster}/config", "getConfig", "The current config version (with `ETag`); its content needs an admin token once tokens are set.", [C], None, JSON, "config"),
  ("put", "/v1/clusters/{cluster}/config", "pushConfig", "Stores the body as the next config version (gated; `If-Match` for an expected version).", [C, q("create", "Create the cluster if it is new.", "boolean")], "application/octet-stream", JSON, "config"),
  ("get", "/v1/clusters/{cluster}/config/history", "configHistory", "The newest stored versions, oldest first.", [C, q("limit", "How many (1 to 1,000; default 20).", "integer")], None, JSON, "config"),
  ("get", "/v1/clusters/{cluster}/config/versions/{version}", "getConfigVersion", "One stored version with its content (base64).", [C, V], None, JSON, "config"),
  ("post", "/v1/clusters/{cluster}/config/rollback", "rollbackConfig", "Makes an earlier version's content current again, as a new version: body `{\"to\": V}`.", [C], JSON, JSON, "config"),
  ("post", "/v1/clusters/{cluster}/switch", "switchDatasource", "Switches a hostgroup's datasource: body `{\"hostgroup\", \"from\", \"to\"}` (gated).", [C], JSON, JSON, "config"),
  ("get", "/v1/watch", "watch", "Server-sent events, one per committed change; resumes after `Last-Event-ID` or `after`.", [q("cluster", "Only this cluster's changes (and keeper-wide ones)."), q("after", "Resume after `GENERATION-REVISION` (or a revision of the current generation).")], None, "text/event-stream", "watch"),
  ("get", "/v1/audit", "audit", "The record of operator actions, oldest first.", [q("cluster", "Only this cluster's entries."), q("by", "Only this token's entries."), q("action", "Only this action (`remove`, `push_config`, `switch`, `rollback`, ...)."), q("limit", "How many of the newest (1 to 10,000; default 100).", "integer")], None, JSON, "audit"),
  ("post", "/v1/reload", "reload", "Re-reads the key files, admin tokens and TLS certificate, all or nothing.", [], None, JSON, "meta"),
]

def operation(method, path, op_id, summary, params, body, answer, tag):
    op = {"operationId": op_id, "summary": summary, "tags": [tag]}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {body: {}}}
    ok = {"description": "Done." if method != "get" else "The answer.", "content": {answer: {}}}
    op["responses"] = {"200": ok, "4XX": {"$ref": "#/components/responses/Problem"}, "5XX": {"$ref": "#/components/responses/Problem"}}
    public = path in ("/livez", "/readyz", "/v1/version", "/", "/v1", "/v1/openapi.json")
    if public:
        op["security"] = []
    return op

paths = {}
for op in OPS:
    paths.setdefault(op[1], {})[op[0]] = operation(*op)

doc = {
  "openapi": "3.1.0",
  "info": {
    "title": "zerokeeper admin API",
    "version": "1",
    "description": "The admin API of a zerokeeper keeper: the status of a fleet's database proxies, the cluster gate, configs and their rollouts, the watch, the audit record. Every error is `application/problem+json` (RFC 9457) with `type` `urn:zerokeeper:problem:NAME`. README.md (HTTP admin API) documents each answer's members.",
    "license": {"name": "See the repository"},
  },
  "servers": [{"url": "http://127.0.0.1:7822", "description": "The default --http address"}],
  "security": [{}, {"bearer": []}],
  "tags": [{"name": t} for t in ["meta", "health", "clusters", "hostgroups", "proxies", "config", "watch", "audit"]],
  "paths": paths,
  "components": {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An admin token (`--admin-token-file`): changes and config contents need an `admin` token once any token is configured; reads need one with `--auth-reads`."}},
    "schemas": {
      "Problem": {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
          "type": {"type": "string", "description": "`urn:zerokeeper:problem:NAME`"},
          "title": {"type": "string"},
          "status": {"type": "integer"},
          "detail": {"type": "string"},
          "instance": {"type": "string"},
        },
        "additionalProperties": True,
      }
    },
    "responses": {
      "Problem": {"description": "A refusal: nothing changed.", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    },
  },
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "http", "openapi.json")
with open(out, "w") as f:
    f.write(json.dumps(doc, indent=2) + "\n")
