"""A client: send each argument as a message and print the replies.

    python examples/client.py ws://127.0.0.1:8000/ hello world
"""

import sys

import wspy

url, *messages = sys.argv[1:]
conn = wspy.connect(url, extensions=[wspy.DeflateMessage()])
for text in messages:
    conn.send(text)
    print(conn.recv().payload, flush=True)
conn.close()
print(f'closed: {conn.close_code}')
