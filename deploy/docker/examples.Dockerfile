# The example code location as a user-code image: the pattern for your own.
# Build from the repository root, after the codeserver image:
#   docker build -f deploy/docker/codeserver.Dockerfile -t tether-codeserver .
#   docker build -f deploy/docker/examples.Dockerfile -t tether-examples .
ARG CODESERVER=tether-codeserver
FROM ${CODESERVER}
COPY examples/ /code/
# The location config names module `example_jobs` with working_directory /code.
