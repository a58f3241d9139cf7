"""Build and install wspy; the C masking accelerator is optional."""

import re
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
INIT = (HERE / 'wspy' / '__init__.py').read_text()
VERSION = re.search(r"__version__ = '([^']+)'", INIT).group(1)


class optional_build_ext(build_ext):  # noqa: N801
    """Build the C extension when a compiler works; otherwise carry on without it."""

    def run(self):
        try:
            super().run()
        except Exception as error:  # no compiler, no headers: the pure-Python fallback serves
            print(f'warning: wspy._speedups not built ({error}); using pure Python')

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as error:
            print(f'warning: {ext.name} not built ({error}); using pure Python')


setup(
    name='wspy',
    version=VERSION,
    description='Socket-level WebSocket (RFC 6455) library: frames, connections, servers',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license_expression='BSD-3-Clause',
    license_files=['LICENSE'],
    packages=find_packages(include=['wspy', 'wspy.*']),
    package_data={'wspy': ['py.typed', '_speedups.pyi']},
    python_requires='>=3.10',
    ext_modules=[Extension('wspy._speedups', ['wspy/_speedups.c'], optional=True)],
    cmdclass={'build_ext': optional_build_ext},
    # wspy.wsgi.gevent and wspy.wsgi.gunicorn subclass their server's classes.
    extras_require={'redis': ['redis'], 'gevent': ['gevent'], 'gunicorn': ['gunicorn'],
                    'test': ['pytest', 'coverage', 'pyOpenSSL', 'hypothesis', 'websockets',
                             'redis', 'werkzeug', 'flask', 'gunicorn', 'django', 'gevent']},
    classifiers=[
        'Development Status :: 5 - Production/Stable',
        'Intended Audience :: Developers',
        'Operating System :: POSIX',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3 :: Only',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Programming Language :: Python :: 3.13',
        'Topic :: Internet :: WWW/HTTP',
        'Topic :: System :: Networking',
    ],
)
