/**
 * What an image is, as the VM layer sees it. Built-in images (`tiny`,
 * `hypervisor`) are built locally from Debian packages; imported images are
 * disks (qcow2/raw, distribution cloud images). Stored under
 * <root>/images/NAME/ with spec.json holding an ImageSpec.
 */

export interface ImageSpec {
  /** Image name (also its directory name). */
  name: string;
  builtin: boolean;
  /** Direct kernel boot: absolute paths inside the image directory. */
  kernel?: string;
  initrd?: string;
  /** Kernel command line the image needs (console, root=..., init=...). */
  cmdline?: string;
  /** A disk used as the backing file of each VM's qcow2 overlay; never written. */
  disk?: string;
  diskFormat?: 'qcow2' | 'raw';
  /** What the image provides, so callers can decide how to wait and what works. */
  features: {
    /** qemu-ga listens on the virtio-serial port org.qemu.guest_agent.0 */
    guestAgent: boolean;
    sshd: boolean;
    cloudInit: boolean;
    /** kvm, kvm_amd, kvm_intel modules are in the image and load on demand. */
    kvmModules: boolean;
    /** QEMU, node and this nestvirt build are in the image (the `hypervisor` image). */
    nestvirt: boolean;
  };
  /** Architecture of the guest. */
  arch: 'x86_64';
  /** Hash of the inputs (package versions, build script version) for built-ins. */
  inputsHash?: string;
  /** The inputs themselves (key -> version), so `image ls` can say why a rebuild happens. */
  inputs?: Record<string, string>;
  /** Line the guest prints on the serial console when its userspace is up (built-ins). */
  readyMarker?: string;
  /** Kernel release of a built-in (lib/modules folder name), e.g. 6.1.0-56-amd64. */
  kernelRelease?: string;
  /** Smallest memory the image is meant to run with, in MiB. */
  minMemoryMiB?: number;
  /** Where an imported image came from (path or URL), and its detected format. */
  source?: string;
  /** sha256 of the disk for imported images. */
  sha256?: string;
  sizeBytes: number;
  createdAt: string;
}
