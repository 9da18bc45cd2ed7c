/**
 * The pure heart of the VM layer: a resolved LaunchSpec and the probed QEMU
 * features in, QEMU's argv out. No I/O here; tested by tables in
 * test/unit/vm/qemu-argv.test.ts. Sections follow the order QEMU documents.
 */
import { FW_CFG_CHAIN_NAME, encodeChain, smbiosChainString } from '../host/chain.js';
import type { QemuFeatures } from './features.js';
import type { LaunchSpec, NicSpec } from './types.js';

/** Escapes a value for QEMU's `key=value,...` option syntax (commas are doubled). */
export function optEscape(v: string): string {
  return v.replace(/,/g, ',,');
}

/** The `-cpu` value for an accelerator and whether nesting is exposed. */
export function cpuModel(
  accel: LaunchSpec['accel'],
  nested: boolean,
  features: QemuFeatures,
): string {
  if (accel === 'kvm') return nested ? 'host' : 'host,-vmx,-svm';
  // TCG: `max` emulates every feature TCG can, including SVM with NPT, so a
  // guest can load kvm_amd with nested=1 (measured; see docs/vms.md).
  const base = features.cpuModels.includes('max') ? 'max' : 'qemu64';
  return nested ? (base === 'max' ? 'max' : 'qemu64,+svm,+npt') : `${base},-vmx,-svm`;
}

/**
 * NIC argv pairs (-netdev + -device) for one card. `romfile=` drops the PXE
 * option ROM: nestvirt never network-boots, and guests (the hypervisor image)
 * need not carry QEMU's ipxe ROMs to start VMs of their own.
 */
export function nicArgv(nic: NicSpec, index: number): string[] {
  const id = `net${index}`;
  const mac = nic.mac ? `,mac=${nic.mac}` : '';
  if (nic.kind === 'user') {
    const fwd = nic.forwards
      .map((f) => `,hostfwd=${f.proto}:${f.hostAddr}:${f.hostPort}-:${f.guestPort}`)
      .join('');
    return [
      '-netdev',
      `user,id=${id}${fwd}`,
      '-device',
      `virtio-net-pci,netdev=${id}${mac},romfile=`,
    ];
  }
  return [
    '-netdev',
    `tap,id=${id},ifname=${optEscape(nic.ifname)},script=no,downscript=no`,
    '-device',
    `virtio-net-pci,netdev=${id}${mac},romfile=`,
  ];
}

/** Builds QEMU's argv (without the binary) for a launch. */
export function qemuArgv(spec: LaunchSpec, features: QemuFeatures): string[] {
  const a: string[] = [];

  // Identity and defaults: nothing QEMU would add by itself, no display.
  a.push('-name', `${optEscape(spec.name)},debug-threads=on`);
  a.push('-nodefaults', '-no-user-config', '-display', 'none');

  // Machine: q35 (microvm hung ~1 boot in 8 at TSC calibration under TCG).
  a.push('-machine', spec.machine ?? 'q35');
  a.push('-accel', spec.accel === 'tcg' ? 'tcg,thread=multi' : 'kvm');

  // CPU
  a.push('-cpu', cpuModel(spec.accel, spec.nested, features));
  a.push('-smp', String(spec.cpus));

  // Memory
  a.push('-m', `${spec.memoryMiB}M`);

  // Boot: direct kernel boot when a kernel is given, else firmware from the disk.
  if (spec.kernel) {
    a.push('-kernel', spec.kernel);
    if (spec.initrd) a.push('-initrd', spec.initrd);
    if (spec.append) a.push('-append', spec.append);
  }

  // Disks: virtio-blk, the VM's own disk first (boots first).
  spec.disks.forEach((d, i) => {
    const ro = d.readonly ? ',readonly=on' : '';
    a.push(
      '-drive',
      `file=${optEscape(d.path)},if=none,id=disk${i},format=${d.format}${ro}${d.readonly ? '' : ',discard=unmap'}`,
    );
    a.push('-device', `virtio-blk-pci,drive=disk${i}${i === 0 ? ',bootindex=1' : ''}`);
  });

  // Network
  spec.nics.forEach((n, i) => a.push(...nicArgv(n, i)));

  // Entropy for the guest (sshd, cloud-init).
  a.push('-device', 'virtio-rng-pci');

  // Chardevs: QMP, serial console (logged), guest agent on virtio-serial.
  a.push('-chardev', `socket,id=qmp,path=${optEscape(spec.qmp)},server=on,wait=off`);
  a.push('-mon', 'chardev=qmp,mode=control');
  a.push(
    '-chardev',
    `socket,id=serial0,path=${optEscape(spec.serial)},server=on,wait=off,logfile=${optEscape(spec.serialLog)},logappend=on`,
  );
  a.push('-serial', 'chardev:serial0');
  a.push('-chardev', `socket,id=qga0,path=${optEscape(spec.qga)},server=on,wait=off`);
  a.push('-device', 'virtio-serial-pci,id=vser0');
  a.push('-device', 'virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0');

  // The level contract (src/host/chain.ts): fw_cfg blob and SMBIOS type 11 OEM string.
  a.push('-fw_cfg', `name=${FW_CFG_CHAIN_NAME},string=${optEscape(encodeChain(spec.chain))}`);
  a.push('-smbios', `type=11,value=${optEscape(smbiosChainString(spec.chain))}`);

  // Process: pidfile (its absolute path also marks the process as this VM's).
  a.push('-pidfile', spec.pidfile);
  return a;
}
