// Package vm boots a Debian kernel under qemu and runs one command inside it,
// so that the test suite can be checked on kernels other than the host's
// (the kernel matrix, level 4 of the test policy).
//
// The guest is small: an initramfs of busybox-static and the kernel modules
// the tests need (resolved from the kernel's own modules.dep), which mounts
// the host's root file system read-only over virtiofs, chroots into it, and
// runs a shell script staged by the host under /var/tmp. The command's
// combined output and its exit status come back on the guest's second serial
// port. qemu runs with TCG; timing measured inside a guest means nothing and
// this package never reports it.
package vm
