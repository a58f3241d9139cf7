"""A Django project in one file: a page and a WebSocket echo view on the same port.

    python examples/django_echo.py [PORT]         # wsgiref, with wspy.wsgi.make_server
    gunicorn -k gthread --threads 20 --chdir examples django_echo:application

Django's own `runserver` is wsgiref's server, which does not give the socket
to the application: serve the project with gunicorn, or as here with
`wspy.wsgi.make_server`. Needs Django (`pip install django`).
"""

import sys

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.urls import path

import wspy
import wspy.wsgi

settings.configure(DEBUG=False, ROOT_URLCONF=__name__, ALLOWED_HOSTS=['*'],
                   SECRET_KEY='an example, not a secret')


def index(request):
    return HttpResponse('<!doctype html><title>echo</title><script>'
                        "const s = new WebSocket(`ws://${location.host}/echo`);"
                        "s.onopen = () => s.send('hello');"
                        's.onmessage = (e) => document.body.append(e.data);</script>')


def echo(request):
    try:
        connection = wspy.wsgi.accept(request.META, extensions=[wspy.DeflateMessage()])
    except wspy.HandshakeError as error:  # not a WebSocket request, or refused
        status, headers, body = wspy.wsgi.answer(error)
        return HttpResponse(body, status=int(status[:3]), headers=dict(headers))
    with connection:
        try:
            while True:
                connection.send(connection.recv().payload)
        except wspy.ConnectionClosed:
            pass
    return HttpResponse()  # never sent: the socket was the WebSocket's


urlpatterns = [path('', index), path('echo', echo)]
application = get_wsgi_application()

if __name__ == '__main__':
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    server = wspy.wsgi.make_server('127.0.0.1', port, application)
    print(f'Django on http://127.0.0.1:{port}/', flush=True)
    server.serve_forever()
