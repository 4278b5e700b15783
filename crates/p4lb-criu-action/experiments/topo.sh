# sourced: netns R (router), C (client 10.0.0.2), A (server 10.88.0.5), B (target 10.88.0.6)
# Namespaces are held by sleeping processes (no /run/netns bind mounts: CRIU refuses nsfs mounts).
ip link set lo up
declare -A H
for n in R C A B; do unshare -n sleep infinity </dev/null >/dev/null 2>&1 & H[$n]=$!; done
sleep 0.2
nx() { local n=$1; shift; nsenter --net=/proc/${H[$n]}/ns/net "$@"; }
for n in R C A B; do nx $n ip link set lo up; done
nx R sysctl -qw net.ipv4.ip_forward=1
nx R ip link add rC type veth peer name eth0 netns /proc/${H[C]}/ns/net
nx R ip link add rA type veth peer name eth0 netns /proc/${H[A]}/ns/net
nx R ip link add rB type veth peer name eth0 netns /proc/${H[B]}/ns/net
for i in rC rA rB; do nx R ip link set $i up; done
for n in C A B; do nx $n ip link set eth0 up; done
nx R ip addr add 10.0.0.1/24 dev rC
nx C ip addr add 10.0.0.2/24 dev eth0
nx C ip route add default via 10.0.0.1
nx R ip addr add 10.88.0.1/32 dev rA
nx R ip addr add 10.88.0.1/32 dev rB
nx A ip addr add 10.88.0.5/24 dev eth0
nx B ip addr add 10.88.0.6/24 dev eth0
for n in A B; do nx $n ip route add default via 10.88.0.1 dev eth0 onlink; done
nx R ip route add 10.88.0.5/32 dev rA
nx R ip route add 10.88.0.6/32 dev rB
