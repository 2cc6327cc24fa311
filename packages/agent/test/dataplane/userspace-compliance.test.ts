// The shared Dataplane compliance suite against the userspace data plane, with
// and without offloads, and on a network where kernel and userspace hosts mix.
import { KernelDataplane } from '../../src/dataplane/kernel.js';
import { dataplaneComplianceSuite } from '../../src/dataplane/testing/compliance.js';
import { UserspaceDataplane } from '../../src/dataplane/userspace.js';

dataplaneComplianceSuite(
  'userspace',
  (host) =>
    new UserspaceDataplane({ vtep: host.vtep, hostNetns: host.netns, gatewaySubnet: host.gatewaySubnet }),
);

// Host 1 of the three runs the kernel data plane: every check then crosses
// kernel <-> userspace in both directions.
dataplaneComplianceSuite('mixed kernel + userspace', (host) =>
  host.index === 1
    ? new KernelDataplane({ vtep: host.vtep, hostNetns: host.netns, gatewaySubnet: host.gatewaySubnet })
    : new UserspaceDataplane({ vtep: host.vtep, hostNetns: host.netns, gatewaySubnet: host.gatewaySubnet }),
);
