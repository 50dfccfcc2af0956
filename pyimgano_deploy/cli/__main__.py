from pyimgano_deploy.cli import main

main()
