"""wss:// with your certificate, and Digest authentication: only known users get in.

    python examples/wss_server.py PORT CERTFILE KEYFILE
    python -m wspy connect wss://localhost:PORT/ --cafile CA.pem --auth alice:wonderland

(`python test/certs.py DIR` makes a test CA and a certificate for localhost.)
"""

import sys

import wspy

USERS = {'alice': 'wonderland'}


class Greeter(wspy.AsyncServer):
    def onopen(self, client):
        client.send(f'hello {client.user}, over {client.sock.ssl_object.version()}')

    def onmessage(self, client, message):
        client.send(message)


port, certfile, keyfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
server = Greeter(('127.0.0.1', port), ssl_args={'certfile': certfile, 'keyfile': keyfile},
                 auth=wspy.DigestAuth(USERS, realm='example'))
print(f'wss://127.0.0.1:{port}/ (user alice, password wonderland)', flush=True)
server.run()
