from vmxprobe.cli import main

main()
