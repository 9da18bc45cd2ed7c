/** Host→guest throughput: bridge (tap) against QEMU user-mode networking. Filled in once VMs run. */
export async function throughputBench(): Promise<void> {
  console.log('throughput: not measured yet');
}
