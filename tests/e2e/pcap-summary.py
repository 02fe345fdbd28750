#!/usr/bin/env python3
"""tests/e2e/pcap-summary.py FILE.pcap

What a guest sent, from the packet record QEMU's filter-dump wrote of its network (libpcap
format, Ethernet frames), one `key value` line each, for run.sh's checks:
  packets N                 every frame recorded (both directions)
  ssh_replies N             TCP segments the guest sent from port 22 (the host's ssh-keyscan)
  ssh_banners N             of those, segments carrying sshd's banner ("SSH-2.0-"): sshd
                            answered (a refused early attempt is only a RST)
  syn DST:PORT              a TCP connection the guest tried to open (SYN without ACK)
  udp DST:PORT              a UDP datagram the guest sent (DNS, DHCP, NTP...)
  dns NAME                  a name the guest asked a DNS server for
The guest is the IPv4 source in 10.0.2.0/24 other than QEMU's host (.2) and DNS (.3).
"""
import struct
import sys


def qname(b, off):
    labels = []
    while off < len(b):
        n = b[off]
        if n == 0 or n & 0xC0:
            break
        labels.append(b[off + 1 : off + 1 + n].decode("ascii", "replace"))
        off += 1 + n
    return ".".join(labels)


def main():
    data = open(sys.argv[1], "rb").read()
    if len(data) < 24:
        print("packets 0")
        return
    magic = struct.unpack("<I", data[:4])[0]
    end = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    off, packets, ssh, banners = 24, 0, 0, 0
    seen = []
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(end + "IIII", data[off : off + 16])
        frame = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        packets += 1
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        proto = ip[9]
        src = ".".join(str(x) for x in ip[12:16])
        dst = ".".join(str(x) for x in ip[16:20])
        if not src.startswith("10.0.2.") or src in ("10.0.2.2", "10.0.2.3"):
            continue
        l4 = ip[ihl:]
        if proto == 6 and len(l4) >= 14:
            sport, dport = struct.unpack(">HH", l4[:4])
            flags = l4[13]
            if sport == 22:
                ssh += 1
                doff = (l4[12] >> 4) * 4
                if l4[doff : doff + 8] == b"SSH-2.0-":
                    banners += 1
            elif flags & 0x02 and not flags & 0x10:
                seen.append(f"syn {dst}:{dport}")
        elif proto == 17 and len(l4) >= 8:
            sport, dport = struct.unpack(">HH", l4[:4])
            seen.append(f"udp {dst}:{dport}")
            if dport == 53 and len(l4) > 20:
                seen.append(f"dns {qname(l4[8:], 12)}")
    print(f"packets {packets}")
    print(f"ssh_replies {ssh}")
    print(f"ssh_banners {banners}")
    for line in sorted(set(seen)):
        print(line)


if __name__ == "__main__":
    main()
