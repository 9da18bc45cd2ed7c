/**
 * Pure analysis: can a guest with this domain XML, on this host, run
 * accelerated VMs of its own, and if not, why. Used by `libvirt ls` on both
 * the live and the inactive XML of a domain (they differ until the guest is
 * power-cycled) and by `nest` to pick the extension.
 */
import { attr, child, childrenNamed, textContent } from './xml.js';
import { parseDomainXml } from './edit.js';
import type { DomainCpu, Extension, FeaturePolicy, LibvirtHost } from './types.js';

/** Reads the nesting-relevant facts of a domain XML for `extension`'s feature. */
export function domainCpu(text: string, extension: Extension | null): DomainCpu {
  const doc = parseDomainXml(text);
  const root = doc.root;
  const os = child(root, 'os');
  const osType = os ? child(os, 'type') : undefined;
  const cpu = child(root, 'cpu');
  const model = cpu ? child(cpu, 'model') : undefined;
  let policy: FeaturePolicy = null;
  if (cpu && extension && extension !== 'nested-hv') {
    const f = childrenNamed(cpu, 'feature').find((x) => attr(x, 'name') === extension);
    if (f) policy = (attr(f, 'policy') ?? 'require') as FeaturePolicy;
  }
  const features = child(root, 'features');
  const nhv = features ? child(features, 'nested-hv') : undefined;
  return {
    type: attr(root, 'type') ?? 'kvm',
    arch: (osType && attr(osType, 'arch')) ?? null,
    mode: cpu ? (attr(cpu, 'mode') ?? 'custom') : null,
    model: model ? textContent(doc, model).trim() || null : null,
    policy,
    nestedHv: nhv ? (attr(nhv, 'state') ?? 'on') : null,
  };
}

/** The guest's architecture family. */
export function archFamily(arch: string | null): 'x86' | 'power' | 's390' | 'arm' | null {
  if (!arch) return null;
  if (/^(x86_64|i[3-6]86)$/.test(arch)) return 'x86';
  if (/^ppc64/.test(arch)) return 'power';
  if (arch === 's390x') return 's390';
  if (/^(aarch64|armv)/.test(arch)) return 'arm';
  return null;
}

/**
 * The extension a guest of this type and arch needs on this host: TCG
 * emulates only AMD's svm; KVM guests get the host's (vmx on Intel, svm on
 * AMD); POWER needs the pseries nested-hv capability; s390x needs sie.
 */
export function pickExtension(
  type: string,
  arch: string | null,
  host: LibvirtHost,
): Extension | null {
  const fam = archFamily(arch ?? host.arch);
  if (fam === 'power') return 'nested-hv';
  if (fam === 's390') return 'sie';
  if (fam !== 'x86') return null;
  if (type === 'qemu') return 'svm';
  if (host.extension === 'vmx' || host.vendor === 'intel') return 'vmx';
  if (host.extension === 'svm' || host.vendor === 'amd') return 'svm';
  return null;
}

/**
 * QEMU x86 CPU models whose definition already includes svm (AMD models and
 * qemu64, QEMU's default): with them svm reaches the guest unless disabled.
 * No Intel model includes vmx except the very old core2duo/coreduo.
 */
const SVM_MODELS = /^(qemu64|phenom|athlon|Opteron_G[1-5]|EPYC.*|Dhyana.*)$/;
const VMX_MODELS = /^(core2duo|coreduo)$/;

export interface Verdict {
  /** The configuration asks for the extension (it would reach the guest). */
  configured: boolean;
  /** configured, and the host can provide it. */
  canNest: boolean;
  reason: string;
}

/** Decides whether a domain with `cpu` can nest on `host`. */
export function verdict(
  name: string,
  cpu: DomainCpu,
  ext: Extension | null,
  host: LibvirtHost,
): Verdict {
  const fam = archFamily(cpu.arch ?? host.arch);
  const tcg = cpu.type === 'qemu';
  if (!ext)
    return {
      configured: false,
      canNest: false,
      reason:
        fam === 'arm'
          ? 'libvirt cannot give an aarch64 guest nested virtualization (needs FEAT_NV support in KVM)'
          : fam === 'x86'
            ? 'the host CPU has neither vmx nor svm, so a KVM guest cannot get either'
            : `nested virtualization for arch ${cpu.arch ?? 'unknown'} is not supported`,
    };
  const fix = `run \`nestvirt libvirt nest ${name}\``;
  let configured = false;
  let why = '';
  if (ext === 'nested-hv') {
    configured = cpu.nestedHv === 'on';
    why = configured
      ? "<nested-hv state='on'/> is set"
      : cpu.nestedHv
        ? `<nested-hv state='${cpu.nestedHv}'/> is set`
        : "<features> has no <nested-hv state='on'/>";
    if (tcg)
      return {
        configured,
        canNest: false,
        reason: 'POWER nested-hv needs a KVM domain (type=kvm), not TCG',
      };
  } else if (cpu.policy === 'disable' || cpu.policy === 'forbid') {
    configured = false;
    why = `the <cpu> ${cpu.policy === 'forbid' ? 'forbids' : 'disables'} ${ext} (policy='${cpu.policy}')`;
  } else if (cpu.policy === 'require' || cpu.policy === 'force') {
    configured = true;
    why = `the <cpu> requires ${ext}`;
  } else if (cpu.policy === 'optional') {
    configured = true;
    why = `the <cpu> lists ${ext} as optional (dropped silently where the host lacks it; require is safer)`;
  } else {
    const mode = cpu.mode;
    if (mode === 'host-passthrough' || mode === 'maximum') {
      configured = !(tcg && mode === 'host-passthrough');
      why = configured
        ? `CPU mode ${mode} passes ${ext} through`
        : 'host-passthrough needs KVM; this TCG domain cannot start with it';
    } else if (mode === 'host-model') {
      configured = !tcg || ext === 'svm';
      why = `CPU mode host-model includes ${ext} when the host offers it`;
    } else {
      const model = cpu.model ?? 'qemu64';
      const inModel =
        ext === 'svm' ? SVM_MODELS.test(model) : ext === 'vmx' ? VMX_MODELS.test(model) : false;
      configured = inModel;
      const which =
        cpu.mode === null ? `no <cpu> (QEMU's default model ${model})` : `CPU model ${model}`;
      why = inModel ? `${which} includes ${ext}` : `${which} does not include ${ext}`;
    }
  }
  if (ext === 'vmx' && tcg)
    return {
      configured: false,
      canNest: false,
      reason: 'TCG (type=qemu) cannot emulate vmx; use svm (an AMD CPU model) or KVM',
    };
  if (!configured) return { configured, canNest: false, reason: `${why}: ${fix}` };
  if (tcg)
    return {
      configured,
      canNest: true,
      reason: `${why}; TCG emulates it (no host support needed)`,
    };
  // KVM: the host must have the extension and its module's nested parameter on.
  if (fam === 'x86' && host.extension && host.extension !== ext)
    return {
      configured,
      canNest: false,
      reason: `${why}, but the host CPU has ${host.extension}, not ${ext}`,
    };
  if (host.nested === false)
    return {
      configured,
      canNest: false,
      reason: `${why}, but the host's ${host.module ?? 'KVM module'} has nested=0: run \`nestvirt enable\``,
    };
  if (host.nested === null)
    return {
      configured,
      canNest: host.local ? false : true,
      reason: host.local
        ? `${why}, but the host's ${host.module ?? 'KVM module'} is not loaded (no nested parameter): run \`nestvirt doctor\``
        : `${why}; the remote host's nested parameter is unknown`,
    };
  return {
    configured,
    canNest: true,
    reason: `${why}, and the host's ${host.module} has nested=1`,
  };
}
