// Writes the seed corpus of fuzz_nat_parse (tests/fuzz/corpus/fuzz_nat_parse):
// real frames built with tests/fixtures/packets.h, one file per frame, each
// shape nat_parse distinguishes. Run it again after changing the shapes:
//   build-fuzz/aimesh_nat_seeds tests/fuzz/corpus/fuzz_nat_parse
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "fixtures/packets.h"

using namespace aimesh::testing;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1];
  auto write = [&](const std::string& name, const std::vector<uint8_t>& b) {
    std::ofstream(dir + "/" + name + ".bin", std::ios::binary)
        .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  };
  PacketSpec v4;
  v4.src = mappedV4(10, 77, 0, 1);
  v4.dst = mappedV4(10, 96, 0, 20);
  v4.sport = 40000;
  v4.dport = 8000;
  write("v4_tcp_syn", buildPacket(v4));

  PacketSpec p = v4;
  p.tcpFlags = kTcpAck | kTcpPsh;
  p.tcpOptions = {1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2};  // NOP NOP timestamps
  p.payload = {'G', 'E', 'T', ' ', '/', '\r', '\n'};
  write("v4_tcp_data_tsopt", buildPacket(p));

  p = v4;
  p.ipOptions = {0x94, 0x04, 0, 0, 1, 1, 1, 0};  // router alert, NOPs, end
  p.tcpFlags = kTcpFin | kTcpAck;
  write("v4_options_tcp_fin", buildPacket(p));

  p = v4;
  p.proto = kProtoUdp;
  p.dport = 53;
  p.payload = {1, 2, 3, 4};
  write("v4_udp", buildPacket(p));
  p.udpChecksum = false;
  write("v4_udp_nocsum", buildPacket(p));

  p = v4;
  p.fragField = 0x2000;  // MF
  write("v4_fragment", buildPacket(p));

  p = v4;
  p.proto = kProtoIcmp;
  write("v4_icmp", buildPacket(p));

  PacketSpec six;
  six.ipv6 = true;
  six.src = v6("fd77::1");
  six.dst = v6("fd00:96::20");
  six.sport = 40001;
  six.dport = 8000;
  write("v6_tcp_syn", buildPacket(six));

  p = six;
  p.ext = {Ipv6Ext{kExtHopByHop, {}}, Ipv6Ext{kExtDstOpts, {1, 4, 0, 0, 0, 0}}};
  p.proto = kProtoUdp;
  p.payload = {9, 9, 9};
  write("v6_hbh_dstopts_udp", buildPacket(p));

  p = six;
  p.ext = {Ipv6Ext{kExtRouting, {0, 0, 0, 0, 0, 0}}};
  write("v6_routing_tcp", buildPacket(p));

  // TCP at byte 190: past the 200 bytes nat_parse pulls (passed as malformed).
  p = six;
  p.ext = {Ipv6Ext{kExtHopByHop, std::vector<uint8_t>(130, 0)}};
  write("v6_long_hbh_tcp", buildPacket(p));

  p = six;
  p.ext = {Ipv6Ext{kExtFragment, {0, 1, 0, 0, 0, 7}}};
  write("v6_fragment", buildPacket(p));

  p = six;
  p.proto = kProtoIcmpV6;
  write("v6_icmp", buildPacket(p));

  write("arp", buildArp());
  return 0;
}
