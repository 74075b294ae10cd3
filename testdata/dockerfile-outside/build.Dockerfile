FROM scratch
COPY in-context.txt /in-context.txt
