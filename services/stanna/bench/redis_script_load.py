# The load of redis_script.sh: pipelined EVALSHA calls of the quota script, the batched one
# (binary parameters, several decisions per call) or the previous one (batch 0: text arguments).
# usage: redis_script_load.py port sha keys decisions batch limit1 period1 [limit2 period2 ...]
import socket, struct, random, sys, time
random.seed(1)  # the same keys in the same order on every run
port, sha, nkeys, total, batch = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
wins = [int(x) for x in sys.argv[6:]]
n = len(wins) // 2
params = struct.pack('<BBI', 1, n, 1) + b''.join(struct.pack('<II', wins[2*i], wins[2*i+1]) for i in range(n))
def cmd(*args):
    out = [b'*%d\r\n' % len(args)]
    for a in args:
        if isinstance(a, str): a = a.encode()
        out.append(b'$%d\r\n%s\r\n' % (len(a), a))
    return b''.join(out)
s = socket.create_connection(('127.0.0.1', port))
f = s.makefile('rb')
def read_reply():
    line = f.readline()
    t = line[:1]
    if t == b'*':
        return [read_reply() for _ in range(int(line[1:]))]
    if t == b'$':
        l = int(line[1:]);
        if l < 0: return None
        d = f.read(l + 2); return d[:-2]
    if t == b':': return int(line[1:])
    if t == b'-': raise SystemExit('error: ' + line.decode())
    return line
PIPE = 200
# EVERY_KEY=1: keys in turn (a warm-up that makes every key's state), not at random.
import os
rotate = os.environ.get('EVERY_KEY') == '1'
turn = 0
def pick():
    global turn
    turn += 1
    return (turn - 1) % nkeys if rotate else random.randrange(nkeys)
done = 0
last = None
while done < total:
    buf = []
    calls = min(PIPE, max(1, (total - done) // max(batch, 1)))
    for _ in range(calls):
        if batch == 0:
            buf.append(cmd('EVALSHA', sha, '1', 'q:{%d}' % pick(), '1', '', 'c', str(n), *[str(w) for w in wins]))
            continue
        keys = ['q2:{%d}' % pick() for _ in range(batch)]
        buf.append(cmd('EVALSHA', sha, str(batch), *keys, '', *([params] * batch)))
    s.sendall(b''.join(buf))
    for _ in range(calls): last = read_reply()
    done += calls * max(batch, 1)
print('last reply', last[:2 + 2 * n])
