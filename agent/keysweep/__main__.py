from keysweep.cli import run

run()
