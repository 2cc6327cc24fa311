// @weft/agent: the `weft` agent as a library (embed or test it) and the
// typed client of its HTTP API. The CLI entry point is cli/main.ts.
export { Agent, type AgentParts } from './agent/agent.js';
export { type AgentConfig, parseAgentConfig } from './agent/config.js';
export { type Attachment, type ContainerRecord, ContainerRuntime } from './agent/containers.js';
export { DnsIdentityBook } from './agent/dns-identity.js';
export { KvNodeComponent } from './agent/kv-component.js';
export { buildAgent, runAgentProcess } from './agent/main.js';
export { Composition, type NamedComponent, type Startable } from './agent/startable.js';
export { AgentClient, ClientError, type ConsulKvEntry } from './api/client.js';
export { ApiServer, type ApiServerOptions } from './api/server.js';
export * from './api/types.js';
export { runCli } from './cli/program.js';
export { KvNodeStore } from './kv-adapter/kvnode-store.js';
export { createLogger, silentLogger } from './log/logger.js';
export { AgentMetrics } from './metrics/metrics.js';
