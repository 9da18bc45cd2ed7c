/**
 * Data types of the libvirt layer: what `nestvirt libvirt ls --json` and
 * `nest --json` print (a documented, stable schema: docs/libvirt.md).
 */

/** What a guest needs to run VMs of its own. */
export type Extension = 'vmx' | 'svm' | 'nested-hv' | 'sie';

/** libvirt `<cpu mode=...>` values nestvirt sets. */
export type CpuMode = 'host-passthrough' | 'host-model' | 'custom' | 'maximum';
export const CPU_MODES: readonly CpuMode[] = [
  'host-passthrough',
  'host-model',
  'custom',
  'maximum',
];

/** A feature's policy in `<cpu>`, or how the extension reaches the guest without one. */
export type FeaturePolicy = 'require' | 'optional' | 'disable' | 'forbid' | 'force' | null;

/** The host as far as libvirt nesting is concerned. */
export interface LibvirtHost {
  arch: string | null;
  vendor: 'intel' | 'amd' | 'ibm' | string | null;
  /** The host CPU's own virtualization extension. */
  extension: 'vmx' | 'svm' | 'power-hv' | 'sie' | null;
  /** The KVM module whose `nested` parameter matters, e.g. kvm_amd. */
  module: string | null;
  /** That module's nested parameter; null when unknown (not loaded, remote host). */
  nested: boolean | null;
  /** True when the URI names this machine, so /sys was read. */
  local: boolean;
}

/** What one domain XML (live or inactive) asks for. */
export interface DomainCpu {
  /** `kvm` or `qemu` (TCG, software emulation). */
  type: string;
  arch: string | null;
  /** The `<cpu mode>`; null when the domain has no `<cpu>`. */
  mode: string | null;
  model: string | null;
  /** The policy of the extension's `<feature>`, null when not listed. */
  policy: FeaturePolicy;
  /** POWER: `<features><nested-hv state>`; null when absent. */
  nestedHv: string | null;
}

/** One row of `nestvirt libvirt ls`. */
export interface DomainReport {
  name: string;
  uuid: string | null;
  state: string;
  type: string;
  arch: string | null;
  /** The extension the guest needs: vmx, svm, nested-hv or sie (null: unknown arch). */
  extension: Extension | null;
  cpu: {
    mode: string | null;
    model: string | null;
    policy: FeaturePolicy;
    nestedHv: string | null;
  };
  /** The guest can run accelerated VMs of its own now (running) or at next start (shut off). */
  canNest: boolean;
  /** The saved configuration nests but the running guest was started before the change. */
  needsPowerCycle: boolean;
  /** The saved configuration would nest (once started / power-cycled). */
  configured: boolean;
  /** nestvirt changed this domain (`nestvirt libvirt unnest` restores it). */
  nestedByNestvirt: boolean;
  /** Why (not), in one sentence. */
  reason: string;
}

export interface LsReport {
  uri: string;
  host: LibvirtHost;
  domains: DomainReport[];
}
