/**
 * The VM layer's data types: what is recorded on disk (VmSpec in spec.json,
 * VmRuntime in runtime.json), what QEMU is started with (LaunchSpec, the
 * input of the pure `qemuArgv`), and what `ls`/`info --json` print (VmInfo).
 * Schemas are documented in docs/vms.md; keep them backward compatible.
 */
import type { ChainInfo } from '../host/chain.js';

/** The accelerator asked for; `auto` picks KVM when the host really can run KVM guests. */
export type AccelRequest = 'auto' | 'kvm' | 'tcg';
/** The accelerator QEMU actually runs with. */
export type Accel = 'kvm' | 'tcg';

/** A host port forwarded to the guest through QEMU user-mode networking. */
export interface PortForward {
  proto: 'tcp' | 'udp';
  /** Host address to bind; 127.0.0.1 unless given (`--port 0.0.0.0:8080:80`). */
  hostAddr: string;
  hostPort: number;
  guestPort: number;
}

/**
 * One network card. The NIC seam: `user` is QEMU's user-mode network (NAT,
 * no host set-up); `tap` attaches to a tap device someone else created (the
 * `net` layer creates the tap on its bridge and passes it here).
 */
export type NicSpec =
  | { kind: 'user'; forwards: PortForward[]; mac?: string }
  | {
      kind: 'tap';
      ifname: string;
      mac: string;
      /** The nestvirt network whose bridge the tap joins. */ network?: string;
    };

/** A disk attached to the guest. */
export interface DiskSpec {
  path: string;
  format: 'qcow2' | 'raw';
  readonly?: boolean;
}

/** A VM's recorded definition: <root>/vms/NAME/spec.json. */
export interface VmSpec {
  /** Schema version of this file. */
  schema: 1;
  name: string;
  /** The image it was made from; null for a direct kernel boot without an image. */
  image: string | null;
  cpus: number;
  memoryMiB: number;
  nested: boolean;
  accel: AccelRequest;
  /** Direct kernel boot (from the image or --kernel/--initrd/--append). */
  kernel?: string;
  initrd?: string;
  /** Kernel command line: the image's, then --append. */
  append?: string;
  /** The VM's own disk: a qcow2 overlay (backed by the image's disk) or a blank disk. */
  disk?: { path: string; backing?: string; backingFormat?: 'qcow2' | 'raw'; sizeBytes: number };
  /** A NoCloud seed (cloud-init) attached read-only; written by the cloud-init layer. */
  seed?: string;
  nics: NicSpec[];
  /** What the image provides (guest agent, sshd, ...), copied from the image at create. */
  imageFeatures: {
    guestAgent: boolean;
    sshd: boolean;
    cloudInit: boolean;
    kvmModules: boolean;
    nestvirt: boolean;
  };
  createdAt: string;
}

/** Why a VM last stopped. */
export interface LastExit {
  at: string;
  /**
   * `stopped` (nestvirt stop), `killed` (nestvirt kill or a forced stop),
   * `exited` (QEMU ended without nestvirt: guest poweroff, crash, kill -9).
   */
  reason: 'stopped' | 'killed' | 'exited';
  /** Last lines of the serial console before it stopped. */
  consoleTail: string[];
  /** Last lines of QEMU's own log (its errors). */
  qemuTail: string[];
}

/** A VM's runtime record: <root>/vms/NAME/runtime.json. */
export interface VmRuntime {
  /** Whether a QEMU was started and not yet seen stopped. */
  state: 'running' | 'stopped';
  pid: number | null;
  accel: Accel | null;
  /** Why auto chose TCG, when it did. */
  accelNote?: string;
  qemu?: string;
  argv?: string[];
  startedAt?: string;
  /** Milliseconds from start to the guest agent's first answer, when waited for. */
  readyMs?: number;
  chain?: ChainInfo;
  lastExit?: LastExit;
}

/** Everything qemuArgv needs, resolved: absolute paths, chosen accelerator. */
export interface LaunchSpec {
  name: string;
  accel: Accel;
  nested: boolean;
  cpus: number;
  memoryMiB: number;
  kernel?: string;
  initrd?: string;
  append?: string;
  disks: DiskSpec[];
  nics: NicSpec[];
  /** Unix socket paths and files (absolute). */
  qmp: string;
  qga: string;
  serial: string;
  serialLog: string;
  pidfile: string;
  chain: ChainInfo;
  /** Machine type; q35 by default. */
  machine?: string;
}

/** What `ls --json` and `info --json` print for a VM (docs/vms.md). */
export interface VmInfo {
  name: string;
  status: 'running' | 'stopped';
  image: string | null;
  cpus: number;
  memoryMiB: number;
  nested: boolean;
  accel: { requested: AccelRequest; effective: Accel | null; note: string | null };
  pid: number | null;
  startedAt: string | null;
  readyMs: number | null;
  level: number | null;
  chain: ChainInfo | null;
  ports: PortForward[];
  nics: NicSpec[];
  disk: { path: string; backing: string | null; sizeBytes: number } | null;
  dir: string;
  sockets: { qmp: string; qga: string; serial: string };
  logs: { serial: string; qemu: string };
  createdAt: string;
  lastExit: LastExit | null;
  /** Addresses on nestvirt networks (dnsmasq lease, else the reservation); see docs/networks.md. */
  addresses?: {
    network: string;
    ip: string;
    source: 'lease' | 'reserved';
    mac: string;
    tap: string;
  }[];
}
