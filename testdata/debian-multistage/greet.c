#include <stdio.h>

int main(int argc, char **argv) {
    printf("greetings, %s (compiled in a builder stage)\n", argc > 1 ? argv[1] : "nobody");
    return 0;
}
