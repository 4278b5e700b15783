#!/bin/bash
# criu dump --tcp-established in netns A (10.88.0.5), restore into netns B (10.88.0.6).
for f in $(ls /proc/$$/fd); do [ "$f" -gt 2 ] 2>/dev/null && eval "exec $f>&-"; done
# MODE=addold  : a CRIU action script adds 10.88.0.5/32 to B at setup-namespaces; the
#                router blackholes 10.88.0.5 during the move and routes it to B after it
# MODE=plain   : nothing added (expect bind failure)
# MODE=nolock  : old address added, no blackhole on the router while moving
set -u
MODE=${MODE:-addold}
. /exp/topo.sh
mount --make-rprivate /; umount /run/netns/* 2>/dev/null; true
rm -rf /tmp/img /tmp/logs; mkdir -p /tmp/img /tmp/logs
# container's processes: server + an outbound client to a peer server in C
nx C setsid p4lb-testapp server --listen 0.0.0.0:7001 </dev/null >/tmp/logs/peer.log 2>&1 &
sleep 0.5
nx A unshare -p -f setsid sh -c 'exec >/dev/null 2>&1; p4lb-testapp server --listen 0.0.0.0:7000 --stateful & p4lb-testapp client --target 10.0.0.2:7001 --conns 20 --rate 20 --duration 25 >/tmp/logs/outbound.json 2>/tmp/logs/outbound.err & wait' </dev/null >/tmp/logs/srv.log 2>&1 &
sleep 1
TREE=$(pgrep -P $(pgrep -x unshare))
# clients of the service (inbound, direct to 10.88.0.5)
nx C p4lb-testapp client --target 10.88.0.5:7000 --conns 50 --rate 20 --duration 20 </dev/null >/tmp/logs/inbound.json 2>/tmp/logs/inbound.err &
CLI=$!
sleep 3
cat > /tmp/act.sh <<'A'
#!/bin/sh
echo "action $CRTOOLS_SCRIPT_ACTION init_pid=${CRTOOLS_INIT_PID:-none} netns=$(readlink /proc/self/ns/net)" >> /tmp/logs/actions.log
if [ "$CRTOOLS_SCRIPT_ACTION" = setup-namespaces ] && [ "$MODE" != plain ]; then
  nsenter --net=/proc/$CRTOOLS_INIT_PID/ns/net ip addr add 10.88.0.5/32 dev eth0 2>>/tmp/logs/actions.log
fi
exit 0
A
chmod +x /tmp/act.sh; export MODE
[ "$MODE" != nolock ] && nx R ip route replace blackhole 10.88.0.5/32
T0=$(date +%s.%N)
nx A criu dump -t $TREE -D /tmp/img --tcp-established --action-script /tmp/act.sh -o dump.log -v4 ; echo "dump rc=$?"
T1=$(date +%s.%N)
# source is gone (like a stopped container): remove A's address, repoint the route to B
nx A ip link del eth0 2>/dev/null
[ "$MODE" != nolock ] || nx R ip route replace 10.88.0.5/32 dev rB
nx B criu restore -D /tmp/img --tcp-established --action-script /tmp/act.sh -o restore.log -v4 -d ; echo "restore rc=$?"
nx R ip route replace 10.88.0.5/32 dev rB
T2=$(date +%s.%N)
echo "dump ${T0}->${T1}  restore done ${T2}"
grep -E "Can't bind|Error" /tmp/img/restore.log | head -5
echo "--- B addresses after restore"; nx B ip -4 addr show dev eth0 | grep inet
echo "--- source address for a new outbound connection from B:"; nx B ip route get 10.0.0.2
wait $CLI
echo "--- inbound clients (C -> 10.88.0.5):"; tail -3 /tmp/logs/inbound.err
sleep 6
echo "--- container's outbound clients (B/A -> C):"; tail -3 /tmp/logs/outbound.err
cat /tmp/logs/actions.log
