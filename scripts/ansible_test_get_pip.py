"""Stand-in for the pip bootstrap script that ansible-test downloads into empty virtualenvs.

ansible-test fetches "get-pip" from a host outside the package registries, which
this project's machines cannot reach. setup.sh installs this file in
ansible-test's cache under the name it looks for; it installs pip with the
standard library's ensurepip, then runs pip with ansible-test's arguments
(pip itself then comes from the package registry as usual).
"""

import runpy
import subprocess
import sys


def main(argv):
    subprocess.run([sys.executable, "-m", "ensurepip", "--default-pip"], check=True, stdout=subprocess.DEVNULL)
    args = [arg for arg in argv if arg not in ("--no-setuptools", "--no-wheel")]
    sys.argv = ["pip", "install"] + args  # get-pip takes what to install
    runpy.run_module("pip", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
