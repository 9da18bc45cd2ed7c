/**
 * The verdict, a pure function of `HostFacts`: can this machine run
 * hardware-accelerated VMs, can those VMs run accelerated VMs of their own,
 * what works instead, and for each problem the exact fix for this vendor,
 * architecture and level.
 */
import type { HostFacts } from './facts.js';

export interface Problem {
  /** Stable id, e.g. `kvm.nested-off`. */
  id: string;
  /** `error` blocks what `affects` names; `warning` degrades it. */
  severity: 'error' | 'warning';
  /** What the problem stops: accelerated VMs here, or nesting inside them. */
  affects: 'vms' | 'nested';
  message: string;
  /** The exact command or file change. */
  fix: string;
}

export interface Fallback {
  /** What to use instead of KVM: QEMU's software emulator. */
  accel: 'tcg';
  /** The QEMU CPU model to use. */
  cpu: 'max';
  /** The TCG probe ran a guest; null when not probed (--root). */
  works: boolean | null;
  /** Guests under this fallback see a virtualization extension and can run KVM themselves. */
  nestedInGuest: boolean;
  /** The extension those guests see. */
  guestExtension: 'svm' | null;
  /** How to use it. */
  how: string;
  detail: string;
}

export interface Note {
  id: string;
  text: string;
  /** Where the limit is documented. */
  source: string;
}

export interface Verdict {
  acceleratedVMs: boolean;
  acceleratedNestedVMs: boolean;
  /** One line for people. */
  summary: string;
  problems: Problem[];
  fallback: Fallback | null;
  notes: Note[];
}

/** The vendor module this CPU would use (even when not loaded). */
export function expectedModule(f: HostFacts): string | null {
  switch (f.cpu.arch) {
    case 'x86_64':
      if (f.cpu.extensions === 'vmx' || (f.cpu.extensions === null && f.cpu.vendor === 'intel'))
        return 'kvm_intel';
      if (f.cpu.extensions === 'svm' || f.cpu.vendor === 'amd' || f.cpu.vendor === 'hygon')
        return 'kvm_amd';
      return null;
    case 'ppc64le':
      return 'kvm_hv';
    default:
      return 'kvm';
  }
}

/** The shell lines that set nested=1 now, or the kernel parameter for a built-in module. */
function nestedFix(f: HostFacts, mod: string): string {
  const m = f.kvm.modules.find((x) => x.name === mod);
  if (m?.builtin)
    return `${mod} is built into this kernel: add \`${mod}.nested=1\` to the kernel command line (e.g. GRUB_CMDLINE_LINUX in /etc/default/grub, then \`update-grub\`) and reboot`;
  return (
    `now: \`nestvirt enable\` (or, with no VM running: \`modprobe -r ${mod} && modprobe ${mod} nested=1\`); ` +
    `persistently: \`nestvirt enable --persist\` (or add \`options ${mod} nested=1\` to /etc/modprobe.d/nestvirt-nested.conf)`
  );
}

/** How to turn nesting on at the layer below this VM. */
export function layerBelowFix(f: HostFacts): string {
  const ext =
    f.cpu.vendor === 'intel'
      ? 'vmx'
      : f.cpu.vendor === 'amd' || f.cpu.vendor === 'hygon'
        ? 'svm'
        : 'vmx|svm';
  const m = f.machine;
  if (f.cpu.arch === 's390x') {
    if (m.hypervisor === 'zvm')
      return 'KVM does not run as a z/VM guest: run KVM in an LPAR, or in a KVM guest whose host has `kvm nested=1`';
    return 'on the KVM host (the layer below): `modprobe -r kvm && modprobe kvm nested=1` (persistently `options kvm nested=1` in /etc/modprobe.d/), then restart this guest; `nestvirt enable --persist` there does both';
  }
  if (f.cpu.arch === 'ppc64le') {
    if (m.hypervisor === 'powervm')
      return 'a PowerVM LPAR cannot run KVM-HV: use a PowerNV (bare-metal OPAL) POWER9 or later host, or a KVM pSeries guest started with cap-nested-hv=on; KVM-PR (`modprobe kvm_pr`) runs unaccelerated guests';
    return "on the L0 (POWER9 or later, PowerNV): `modprobe kvm_hv nested=1` and start this guest with `-machine pseries,cap-nested-hv=on` (libvirt: `<features><nested-hv state='on'/></features>`), then load kvm_hv here";
  }
  switch (m.cloud) {
    case 'gce':
      return (
        'Google Compute Engine: use an Intel machine series other than E2 and N2D (e.g. N2, N1, C2; not AMD, Arm or memory-optimized), ' +
        'min CPU platform Intel Haswell or later, enable nesting on the instance ' +
        '(`gcloud compute instances create NAME --enable-nested-virtualization --machine-type=n2-standard-4 --min-cpu-platform="Intel Haswell"`, ' +
        'or set advancedMachineFeatures.enableNestedVirtualization: true with `gcloud compute instances export` / `update-from-file`; older images: the enable-vmx licence), ' +
        'and make sure the org policy constraint constraints/compute.disableNestedVirtualization is not enforced; `nestvirt gcp check` checks all of this'
      );
    case 'aws':
      return (
        `AWS EC2${m.product ? ` (this is ${m.product})` : ''}: use a bare-metal instance type (*.metal, e.g. ${f.cpu.arch === 'aarch64' ? 'c6g.metal, m7g.metal' : 'm5.metal, c5.metal'}), ` +
        'or an 8th-generation Intel type (c8i, m8i, r8i and their flex variants) launched with `--cpu-options NestedVirtualization=enabled`; other virtualized types do not expose VT-x'
      );
    case 'azure':
      return 'Azure: resize to a VM size whose family supports nested virtualization (Dv3/Dsv3, Ev3/Esv3 and later generations; the "Azure compute units" table marks them), then restart';
    default:
      break;
  }
  switch (m.hypervisor) {
    case 'pvm':
      return 'none from inside this VM: a PVM host (kvm_pvm) does not pass VT-x/AMD-V to its guests; run on bare metal or on a VM with nesting enabled, or use QEMU TCG (see fallback)';
    case 'qemu-tcg':
      return `the layer below runs this VM under QEMU TCG with a CPU model without ${ext === 'vmx' ? 'svm (TCG never emulates VMX)' : ext}: restart it with \`-cpu max\` (TCG then offers SVM with NPT)`;
    case 'vmware':
      return 'VMware: power this VM off, enable "Expose hardware assisted virtualization to the guest OS" (vhv.enable = "TRUE" in its .vmx), power it on';
    case 'hyperv':
      return 'Hyper-V: with this VM off, on its host run `Set-VMProcessor -VMName NAME -ExposeVirtualizationExtensions $true`, then start it';
    case 'virtualbox':
      return 'VirtualBox: with this VM off, on its host run `VBoxManage modifyvm NAME --nested-hw-virt on`';
    case 'xen':
      return "Xen: add `nestedhvm=1` to this domain's xl configuration (HVM guests only) and restart it";
    default:
      return (
        `on the L0 (KVM/libvirt): \`virsh edit DOMAIN\` and use \`<cpu mode='host-passthrough'/>\` (or add \`<feature policy='require' name='${ext}'/>\` to its <cpu>), ` +
        `with nested=1 on the L0's KVM module — \`nestvirt libvirt nest DOMAIN\` and \`nestvirt enable --persist\` on the L0 do both; plain QEMU: \`-cpu host\`; then power-cycle this VM`
      );
  }
}

/** Documented limits of nesting, as notes. */
function limits(f: HostFacts, nestedPossible: boolean): Note[] {
  const notes: Note[] = [];
  const relevant = nestedPossible || (f.level ?? 0) >= 1;
  if (relevant)
    notes.push({
      id: 'nesting.depth',
      text: 'L3 and deeper (a VM inside an L2) work in principle but are not tested or supported by hardware and cloud vendors; expect slowness and rough edges',
      source: 'https://cloud.google.com/compute/docs/instances/nested-virtualization/overview',
    });
  if (f.cpu.arch === 'x86_64' && relevant)
    notes.push({
      id: 'nesting.migration',
      text: 'do not live-migrate, save or snapshot an L1 while its L2 guests run (Intel: supported only from Linux 5.3 and QEMU 4.2; before that, and on AMD, the result is undefined): shut the L2 guests down first',
      source: 'Linux Documentation/virt/kvm/x86/running-nested-guests.rst ("Limitations")',
    });
  if (f.cpu.arch === 'x86_64' && (f.cpu.vendor === 'amd' || f.cpu.extensions === 'svm') && relevant)
    notes.push({
      id: 'nesting.amd-migration',
      text: 'AMD (nested SVM): migrating or saving an L1 with running L2 guests is not reliable; keep L1 hosts of nested guests where they are',
      source: 'Linux Documentation/virt/kvm/x86/running-nested-guests.rst',
    });
  if (f.cpu.arch === 's390x')
    notes.push({
      id: 'nesting.s390-hpage',
      text: 'IBM Z: a KVM host with nested=1 cannot back its guests with huge pages (kvm parameters nested=1 and hpage=1 exclude each other), so L1 guests that run L2s use 4K pages',
      source: 'Linux arch/s390/kvm/kvm-s390.c (nested and hpage are mutually exclusive)',
    });
  if (f.cpu.arch === 'ppc64le')
    notes.push({
      id: 'nesting.power-cap-nested-hv',
      text: 'POWER9 and later: KVM-HV inside a pSeries guest needs the L0 to start that guest with `-machine pseries,cap-nested-hv=on` and kvm_hv nested=1 on the L0 (radix MMU); POWER8 has no nested KVM-HV',
      source: 'Linux Documentation/arch/powerpc/kvm-nested.rst; QEMU docs/system/ppc/pseries.rst',
    });
  if (f.cpu.arch === 'aarch64')
    notes.push({
      id: 'nesting.arm64',
      text: 'arm64: nested KVM needs CPUs with FEAT_NV2 and a recent kernel booted with kvm-arm.mode=nested',
      source: 'Linux Documentation/admin-guide/kernel-parameters.txt (kvm-arm.mode)',
    });
  return notes;
}

/** Diagnoses the facts: the verdict, every problem with its fix, the fallback and the limits. */
export function diagnose(f: HostFacts): Verdict {
  const problems: Problem[] = [];
  const add = (p: Problem): void => void problems.push(p);
  const arch = f.cpu.arch;
  const ext = f.cpu.extensions;
  const mod = f.kvm.module;
  const want = expectedModule(f);
  const pvm = mod === 'kvm_pvm' || f.kvm.pvmNotBinding || f.machine.hypervisor === 'pvm';
  const vm = f.machine.virtual === true;
  const probe = f.kvm.probe;
  const acc = f.kvm.access;

  // 1. Can accelerated VMs run here at all?
  let blocked = false;
  // Without kvm_pvm's own line (kernel messages unreadable, or the line has
  // left the ring buffer), kvm_pvm present but no /dev/kvm is the same case, inferred.
  const pvmGuestInferred =
    !f.kvm.pvmNotBinding && mod === 'kvm_pvm' && !f.kvm.device && ext === null;
  if ((f.kvm.pvmNotBinding || pvmGuestInferred) && !f.kvm.device) {
    blocked = true;
    add({
      id: 'kvm.pvm-guest',
      severity: 'error',
      affects: 'vms',
      message: pvmGuestInferred
        ? `kvm_pvm is loaded but provides no /dev/kvm, and the CPU offers no VT-x/AMD-V: this kernel is most likely itself a PVM guest (${f.kernel.messagesSource === null ? 'kernel messages unreadable; as root doctor can confirm' : "kvm_pvm's own kernel line is no longer in the ring buffer"})`
        : 'this machine is itself a PVM guest: kvm_pvm is present but does not bind ("this kernel is itself a kvm-pvm guest; not binding"), the CPU offers no VT-x/AMD-V, and there is no /dev/kvm',
      fix: layerBelowFix({ ...f, machine: { ...f.machine, cloud: null, hypervisor: 'pvm' } }),
    });
  } else if (mod === 'kvm_pvm' && f.kvm.device && probe?.ok !== true) {
    blocked = true;
    add({
      id: 'kvm.pvm-only',
      severity: 'error',
      affects: 'vms',
      message:
        '/dev/kvm comes from kvm_pvm: it answers (API version 12) but runs only PVM-enabled guest kernels; standard guests hang' +
        (probe?.ran ? ` (probe: ${probe.detail})` : ''),
      fix: 'for standard guests use QEMU TCG (see fallback); for accelerated guests boot a PVM guest kernel (CONFIG_PVM_GUEST) under it, or run on a host that exposes VT-x/AMD-V',
    });
  } else if (
    (ext === null &&
      mod !== 'kvm_pvm' &&
      arch !== 'aarch64' &&
      !(arch === 'ppc64le' && mod === 'kvm_pr')) ||
    (arch === 'aarch64' && vm && !f.kvm.device)
  ) {
    blocked = true;
    const what =
      arch === 'x86_64'
        ? 'neither VT-x (vmx) nor AMD-V (svm)'
        : arch === 's390x'
          ? 'no SIE (the "sie" feature)'
          : arch === 'aarch64'
            ? 'no EL2 to this VM (no /dev/kvm)'
            : 'no hypervisor mode (this is not a PowerNV host)';
    if (vm || pvm)
      add({
        id: 'cpu.no-extension',
        severity: 'error',
        affects: 'vms',
        message: `the CPU offers ${what}: ${f.machine.hypervisor && f.machine.hypervisor !== 'unknown' ? `the hypervisor below (${f.machine.hypervisor})` : 'the layer below'} does not pass virtualization to this VM`,
        fix: layerBelowFix(f),
      });
    else
      add({
        id: 'cpu.no-extension',
        severity: 'error',
        affects: 'vms',
        message: `the CPU offers ${what}${f.kvm.disabledByFirmware ? ' (the kernel says it is disabled by the firmware)' : ''}`,
        fix:
          arch === 'x86_64'
            ? `enable ${f.cpu.vendor === 'amd' ? 'SVM mode (AMD-V)' : 'Intel Virtualization Technology (VT-x)'} in the firmware (BIOS/UEFI) setup, then power-cycle`
            : 'this machine cannot run KVM',
      });
  } else if (f.kvm.disabledByFirmware && !f.kvm.device) {
    blocked = true;
    add({
      id: 'cpu.disabled-by-firmware',
      severity: 'error',
      affects: 'vms',
      message: 'the kernel says virtualization is disabled by the firmware (BIOS)',
      fix: `enable ${ext === 'svm' ? 'SVM mode (AMD-V)' : 'Intel Virtualization Technology (VT-x)'} in the firmware setup, power-cycle, then \`modprobe ${want ?? 'kvm'}\``,
    });
  } else if (mod === null || (arch === 'ppc64le' && mod === 'kvm_pr')) {
    blocked = true;
    if (arch === 'ppc64le' && mod === 'kvm_pr')
      add({
        id: 'kvm.pr-only',
        severity: 'error',
        affects: 'vms',
        message:
          'only kvm_pr is loaded: KVM-PR runs guests in problem state, without hardware acceleration',
        fix: f.cpu.extensions === 'power-hv' ? '`modprobe kvm_hv`' : layerBelowFix(f),
      });
    else
      add({
        id: 'kvm.module-not-loaded',
        severity: 'error',
        affects: 'vms',
        message: `the KVM module for this CPU (${want}) is not loaded`,
        fix:
          arch === 'aarch64'
            ? 'boot a kernel with KVM (CONFIG_KVM) entered at EL2 by the firmware; check `dmesg | grep -i kvm`'
            : `\`modprobe ${want}\`${ext ? ` (persistently: \`echo ${want} > /etc/modules-load.d/${want}.conf\`)` : ''}`,
      });
  } else if (!f.kvm.device) {
    blocked = true;
    add({
      id: 'kvm.no-device',
      severity: 'error',
      affects: 'vms',
      message: `${mod} is loaded but there is no /dev/kvm`,
      fix: `reload it: \`modprobe -r ${mod} && modprobe ${mod}\`, then look for the reason in \`dmesg | grep -i kvm\` (devtmpfs creates /dev/kvm as character device 10:232)`,
    });
  } else if (acc && !(acc.readable && acc.writable)) {
    blocked = true;
    add({
      id: 'kvm.no-access',
      severity: 'error',
      affects: 'vms',
      message: `user ${acc.user || acc.uid} cannot open /dev/kvm read-write (mode ${acc.mode}, group ${acc.group ?? '?'})`,
      fix:
        acc.group && !acc.inGroup
          ? `\`usermod -aG ${acc.group} ${acc.user || '$USER'}\`, then log out and back in (or \`newgrp ${acc.group}\`)`
          : `\`chmod 0660 /dev/kvm && chgrp kvm /dev/kvm\` and \`usermod -aG kvm ${acc.user || '$USER'}\``,
    });
  } else if (probe?.ran && probe.ok === false) {
    blocked = true;
    add({
      id: 'kvm.probe-failed',
      severity: 'error',
      affects: 'vms',
      message: `/dev/kvm is there but the probe failed: ${probe.detail}`,
      fix: `look at \`dmesg | grep -i kvm\`; reload the module: \`modprobe -r ${mod} && modprobe ${mod}\``,
    });
  }
  const acceleratedVMs = !blocked && f.kvm.device && mod !== null;

  // 2. Can those VMs run accelerated VMs themselves?
  let nestedOk = false;
  if (acceleratedVMs) {
    const m = mod!;
    if (arch === 'aarch64') {
      nestedOk = f.kvm.modules.find((x) => x.name === 'kvm')?.params['mode'] === 'nested';
      if (!nestedOk)
        add({
          id: 'kvm.nested-off',
          severity: 'error',
          affects: 'nested',
          message: 'arm64 KVM is not in nested mode',
          fix: 'on CPUs with FEAT_NV2: add `kvm-arm.mode=nested` to the kernel command line and reboot',
        });
    } else if (arch === 'ppc64le' && f.machine.virtual) {
      add({
        id: 'kvm.nested-depth',
        severity: 'error',
        affects: 'nested',
        message:
          'this pSeries guest already runs KVM-HV nested; a further level (L3) is not supported on POWER',
        fix: 'run nested guests one level up, on the PowerNV host',
      });
    } else if (m === 'kvm_pvm') {
      add({
        id: 'kvm.nested-unsupported',
        severity: 'error',
        affects: 'nested',
        message:
          'kvm_pvm offers its guests no VT-x/AMD-V: they cannot run accelerated guests of their own',
        fix: 'run nested guests under QEMU TCG inside them (-cpu max), or on a host with VT-x/AMD-V and nested=1',
      });
    } else if (arch === 'ppc64le' && f.kvm.nested === null) {
      add({
        id: 'kvm.nested-unsupported',
        severity: 'error',
        affects: 'nested',
        message: `${m} has no nested parameter: nested KVM-HV needs POWER9 or later and Linux 4.20 or later`,
        fix: 'run nested guests on a POWER9 (or later) PowerNV host with a current kernel',
      });
    } else if (f.kvm.nested !== true) {
      add({
        id: 'kvm.nested-off',
        severity: 'error',
        affects: 'nested',
        message: `${m} is loaded with nested=${f.kvm.modules.find((x) => x.name === m)?.params['nested'] ?? '(none)'}: guests started here see no ${arch === 'x86_64' ? (ext === 'vmx' ? 'VMX' : 'SVM') : arch === 's390x' ? 'SIE' : 'hypervisor mode'}`,
        fix: nestedFix(f, m),
      });
    } else if (probe?.guestSees && !(probe.guestSees.vmx || probe.guestSees.svm)) {
      add({
        id: 'kvm.nested-not-exposed',
        severity: 'error',
        affects: 'nested',
        message: `${m} has nested=1 but the probe guest (-cpu host) saw neither VMX nor SVM`,
        fix: `reload the module so the parameter takes effect: \`modprobe -r ${m} && modprobe ${m} nested=1\``,
      });
    } else nestedOk = true;
    if (arch === 'x86_64' && ext && !f.cpu.secondLevelPaging)
      add({
        id: ext === 'vmx' ? 'cpu.no-ept' : 'cpu.no-npt',
        severity: 'warning',
        affects: 'nested',
        message: `the CPU offers ${ext.toUpperCase()} without ${ext === 'vmx' ? 'EPT' : 'NPT'}: guests (and their guests) use shadow page tables, which is slow`,
        fix: vm
          ? layerBelowFix(f)
          : 'use a CPU with second-level paging, or enable it in the firmware setup',
      });
  }
  const acceleratedNestedVMs = acceleratedVMs && nestedOk;

  // 3. What works instead.
  let fallback: Fallback | null = null;
  if (!acceleratedVMs) {
    const tp = f.tcg.probe;
    const x86 = arch === 'x86_64';
    const sees = tp?.guestSees;
    fallback = {
      accel: 'tcg',
      cpu: 'max',
      works: tp && tp.ran ? tp.ok : null,
      nestedInGuest: x86 ? (sees ? sees.svm || sees.vmx : true) : false,
      guestExtension: x86 ? 'svm' : null,
      how: x86
        ? '`nestvirt run --accel tcg` (QEMU `-accel tcg -cpu max`): software emulation, much slower than KVM; its guests see SVM with NPT, load kvm_amd nested=1 and run KVM-accelerated guests of their own'
        : `QEMU \`-accel tcg\` (software emulation, much slower than KVM)`,
      detail: tp ? tp.detail : 'not probed (--root)',
    };
  }

  const notes = limits(f, acceleratedNestedVMs || (fallback?.nestedInGuest ?? false));
  if (f.source.live && f.kernel.messagesSource === null)
    notes.push({
      id: 'doctor.kmsg-unreadable',
      text: 'kernel messages were not readable (dmesg restricted): the hypervisor below may be misnamed; run doctor as root for a sharper answer',
      source: 'kernel.dmesg_restrict',
    });
  if (acceleratedVMs && !acceleratedNestedVMs && arch === 'x86_64')
    notes.push({
      id: 'nesting.tcg-inside',
      text: 'guests started here can still run their own guests under QEMU TCG (slow), or with KVM once nesting is on',
      source: 'QEMU TCG',
    });

  const summary = acceleratedNestedVMs
    ? `accelerated VMs: yes; nested accelerated VMs: yes (${mod} nested=1)`
    : acceleratedVMs
      ? `accelerated VMs: yes; nested accelerated VMs: no`
      : `accelerated VMs: no${fallback ? `; use QEMU TCG instead${fallback.nestedInGuest ? ' (its guests can run KVM)' : ''}` : ''}`;
  return { acceleratedVMs, acceleratedNestedVMs, summary, problems, fallback, notes };
}
