# The guest integrity check shared by test-nbd-guest.bats and test-fuse-bridge.bats
# (`load guest-integrity` after test_helper).
#
# The host puts random data at the OFFSET:LENGTH ranges $pre_ranges of the image before the
# guest boots (an aligned 64 KiB at 0, 8 KiB at an odd sector, 1 MiB in one request, the
# disk's last 4 KiB); the guest reads them back, then writes its own ($write_ranges: a MiB,
# 4 KiB at an odd sector, 64 KiB just before the last 4 KiB) and runs fio with crc32c
# verification over [$fio_off, $fio_off + $fio_len) with request sizes from 512 bytes to
# 128 KiB.  None of the ranges overlap.  The disk is 64 MiB.

mib=$((1024 * 1024))
pre_ranges="0:65536 $((5 * mib + 3 * 512)):8192 $((40 * mib)):$mib $((64 * mib - 4096)):4096"
write_ranges="$mib:$mib $((3 * mib + 7 * 512)):4096 $((64 * mib - 69632)):65536"
fio_off=$((16 * mib)) fio_len=$((16 * mib))

# integrity_guest [TIMEOUT]: boots a guest against $sock (default time limit 300 s).  The guest
# prints "size=BYTES", "R OFFSET:LENGTH SHA256" for each range it reads, "W OFFSET LENGTH
# SHA256" for each range it writes, "fio=STATUS", "dmesg=bad" after an I/O error, and
# "disk=SHA256" of the whole disk read back with O_DIRECT at the end.
integrity_guest() {
  guest_run -t "${1:-300}" "$sock" "
    echo size=\$(( \$(cat /sys/block/vda/size) * 512 ))
    for r in $pre_ranges; do
      off=\${r%:*} len=\${r#*:}
      echo R \$r \$(dd if=/dev/vda bs=\$len count=1 skip=\$off iflag=skip_bytes,direct \
                     status=none | sha256sum | cut -d' ' -f1)
    done
    for r in $write_ranges; do
      off=\${r%:*} len=\${r#*:}
      head -c \$len /dev/urandom > pattern
      dd if=pattern of=/dev/vda bs=\$len count=1 seek=\$off oflag=seek_bytes,direct \
         conv=notrunc status=none || exit 1
      echo W \$off \$len \$(sha256sum < pattern | cut -d' ' -f1)
    done
    fio --name=v --filename=/dev/vda --ioengine=libaio --direct=1 --rw=randwrite \
        --bsrange=512-128k --iodepth=16 --offset=$fio_off --size=$fio_len \
        --verify=crc32c --verify_fatal=1 --do_verify=1 > fio.out 2>&1
    s=\$?; tail -n 3 fio.out; echo fio=\$s
    if dmesg | grep -i -E 'I/O error|blk_update_request'; then echo dmesg=bad; fi
    echo disk=\$(dd if=/dev/vda bs=1M count=64 iflag=direct status=none | sha256sum | cut -c1-64)"
}
