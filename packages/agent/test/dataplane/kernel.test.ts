import { KernelDataplane } from '../../src/dataplane/kernel.js';
import { dataplaneComplianceSuite } from '../../src/dataplane/testing/compliance.js';

dataplaneComplianceSuite(
  'kernel',
  (host) =>
    new KernelDataplane({ vtep: host.vtep, hostNetns: host.netns, gatewaySubnet: host.gatewaySubnet }),
);
