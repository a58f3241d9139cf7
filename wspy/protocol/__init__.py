"""The I/O-free protocol core: decisions of the RFCs, made on data, for every driver.

Nothing here reads or writes a socket, waits or starts a thread: drivers
feed it what arrived and carry out what it decides. It is being gathered
here module by module; `opening` holds the client's opening decisions
(redirects, authentication challenges).
"""
