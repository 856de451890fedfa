#!/usr/bin/env python3
"""Sends exactly N GET requests over C keep-alive connections, round robin, and checks every
answer is 200: the load of the instruction-count benchmark, where the count of requests must be
exact and the speed does not matter.

usage: fixed_requests.py PORT PATH N CONNECTIONS [COOKIE]
"""
import http.client
import sys


def main():
    port, path, total, conns = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    headers = {}
    if len(sys.argv) > 5:
        headers["Cookie"] = sys.argv[5]
    clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(conns)]
    for i in range(total):
        client = clients[i % conns]
        client.request("GET", path, headers=headers)
        answer = client.getresponse()
        answer.read()
        if answer.status != 200:
            sys.exit(f"request {i}: status {answer.status}")
    for client in clients:
        client.close()


if __name__ == "__main__":
    main()
