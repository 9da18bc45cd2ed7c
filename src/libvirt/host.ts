/**
 * The host facts libvirt nesting depends on: the CPU's arch, vendor and
 * virtualization extension (from `virsh capabilities`, so it is right for
 * remote URIs too) and, for a local URI, the KVM module's `nested`
 * parameter read through a root directory (/sys/module/<m>/parameters/nested),
 * so fixture trees stand in for machines.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { attr, child, childrenNamed, parseXml, textContent } from './xml.js';
import type { LibvirtHost } from './types.js';

/** True when the URI names this machine (no host part, or localhost). */
export function isLocalUri(uri: string): boolean {
  const m = /^[A-Za-z0-9+.-]+:\/\/([^/?]*)/.exec(uri);
  if (!m) return true;
  const host = m[1]!.replace(/^[^@]*@/, '').replace(/:\d+$/, '');
  return host === '' || host === 'localhost' || host === '127.0.0.1' || host === '[::1]';
}

/** Parses `virsh capabilities` for the host CPU's arch, vendor and extension. */
export function hostFromCapabilities(
  xml: string,
): Pick<LibvirtHost, 'arch' | 'vendor' | 'extension'> {
  const doc = parseXml(xml);
  const host = child(doc.root, 'host');
  const cpu = host ? child(host, 'cpu') : undefined;
  const archEl = cpu ? child(cpu, 'arch') : undefined;
  const vendorEl = cpu ? child(cpu, 'vendor') : undefined;
  const arch = archEl ? textContent(doc, archEl).trim() : null;
  const vendorRaw = vendorEl ? textContent(doc, vendorEl).trim() : '';
  const feats = new Set(cpu ? childrenNamed(cpu, 'feature').map((f) => attr(f, 'name')) : []);
  let vendor: string | null = null;
  if (/intel/i.test(vendorRaw)) vendor = 'intel';
  else if (/amd|hygon/i.test(vendorRaw)) vendor = 'amd';
  else if (arch && /^ppc64/.test(arch)) vendor = 'ibm';
  else if (arch === 's390x') vendor = 'ibm';
  else if (vendorRaw) vendor = vendorRaw.toLowerCase();
  let extension: LibvirtHost['extension'] = null;
  if (feats.has('vmx')) extension = 'vmx';
  else if (feats.has('svm')) extension = 'svm';
  else if (arch && /^ppc64/.test(arch)) extension = 'power-hv';
  else if (arch === 's390x' && feats.has('sie')) extension = 'sie';
  return { arch, vendor, extension };
}

/** The KVM module whose nested parameter matters for guests on this host. */
export function nestedModule(arch: string | null, vendor: string | null): string | null {
  if (arch && /^ppc64/.test(arch)) return 'kvm_hv';
  if (arch === 's390x') return 'kvm';
  if (vendor === 'intel') return 'kvm_intel';
  if (vendor === 'amd') return 'kvm_amd';
  return null;
}

/** Reads /sys/module/<m>/parameters/nested under `root`: true/false, or null when absent. */
export async function readNested(root: string, module: string | null): Promise<boolean | null> {
  if (!module) return null;
  let v: string;
  try {
    v = (await readFile(join(root, 'sys/module', module, 'parameters/nested'), 'utf8')).trim();
  } catch {
    return null;
  }
  if (/^(Y|y|1)$/.test(v)) return true;
  if (/^(N|n|0)$/.test(v)) return false;
  return null;
}

/** Reads the first CPU's vendor and flags from <root>/proc/cpuinfo (local hosts without capabilities). */
export async function cpuinfoFacts(
  root: string,
): Promise<Pick<LibvirtHost, 'vendor' | 'extension'> | undefined> {
  let text: string;
  try {
    text = await readFile(join(root, 'proc/cpuinfo'), 'utf8');
  } catch {
    return undefined;
  }
  const vendorId = /^vendor_id\s*:\s*(\S+)/m.exec(text)?.[1] ?? '';
  const flags = new Set((/^flags\s*:(.*)$/m.exec(text)?.[1] ?? '').trim().split(/\s+/));
  return {
    vendor: /Intel/.test(vendorId) ? 'intel' : /AMD|Hygon/.test(vendorId) ? 'amd' : null,
    extension: flags.has('vmx') ? 'vmx' : flags.has('svm') ? 'svm' : null,
  };
}

/** Builds the LibvirtHost from capabilities XML and, for local URIs, the root tree. */
export async function libvirtHost(
  capabilitiesXml: string,
  uri: string,
  root = '/',
): Promise<LibvirtHost> {
  const caps = hostFromCapabilities(capabilitiesXml);
  const local = isLocalUri(uri);
  let { vendor, extension } = caps;
  if (local && caps.arch && /^(x86_64|i[3-6]86)$/.test(caps.arch)) {
    // /proc/cpuinfo is the kernel's own view: trust it for vmx/svm on a local host.
    const ci = await cpuinfoFacts(root);
    if (ci) {
      vendor = ci.vendor ?? vendor;
      extension = ci.extension;
    }
  }
  const module = nestedModule(caps.arch, vendor);
  return {
    arch: caps.arch,
    vendor,
    extension,
    module,
    nested: local ? await readNested(root, module) : null,
    local,
  };
}

/** The local host's facts without libvirt (for editing an XML file): arch from node, the rest from the root tree. */
export async function localHost(root = '/'): Promise<LibvirtHost> {
  const arch =
    { x64: 'x86_64', arm64: 'aarch64', ppc64: 'ppc64le', s390x: 's390x', ia32: 'i686' }[
      process.arch as string
    ] ?? process.arch;
  const ci = /^(x86_64|i686)$/.test(arch) ? await cpuinfoFacts(root) : undefined;
  const vendor = ci?.vendor ?? (/^ppc64|s390x/.test(arch) ? 'ibm' : null);
  const extension = ci ? ci.extension : /^ppc64/.test(arch) ? 'power-hv' : null;
  const module = nestedModule(arch, vendor);
  return { arch, vendor, extension, module, nested: await readNested(root, module), local: true };
}
