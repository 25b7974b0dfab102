# imgclassd: ResNet image classification service. `make help` lists targets.

CC      ?= cc
OPT     ?= -O2 -g
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter -Werror
CFLAGS  ?=
CFLAGS  += $(OPT) $(WARN) -std=c11 -D_GNU_SOURCE -pthread -MMD -MP -Iengine -Iserver
CFLAGS  += $(shell pkg-config --cflags openblas 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas) \
           -ljpeg -ljansson -lm -pthread
SRV_LIBS := -lmicrohttpd
TEST_LIBS := -lcurl
B       := build
REF     := build/ref
PY      := /usr/bin/python3
ARCH    ?= resnet50
PORT    ?= 8080
FUZZ_SECONDS ?= 60

# Debian packages the build, the tests, the reference (torchvision) and the
# browser test (chromium) need. Node.js 20 + npm come with the machine image;
# Debian's npm would conflict with that nodejs, so it is not listed.
DEB_PKGS := build-essential pkg-config libmicrohttpd-dev libjpeg62-turbo-dev \
            libjansson-dev libopenblas-dev libcurl4-openssl-dev \
            python3-torch python3-torchvision python3-pil python3-numpy python3-yaml chromium \
            clang libclang-rt-14-dev

ENGINE_SRC := $(filter-out engine/imgclass.c,$(wildcard engine/*.c))
SERVER_SRC := $(filter-out server/main.c,$(wildcard server/*.c))
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(B)/%.o) $(B)/gen/labels_data.o
SERVER_OBJ := $(SERVER_SRC:%.c=$(B)/%.o)
TEST_SRC   := $(wildcard tests/test_*.c)
TEST_BIN   := $(TEST_SRC:tests/%.c=$(B)/tests/%)
TEST_SCRIPTS := tests/test_browser.sh tests/test_fetch.py tests/test_deploy.py

.PHONY: all deps test run clean help asan check-deps bench test-browser model test-docker fuzz
all: $(B)/imgclass $(if $(wildcard server/main.c),$(B)/imgclassd)  ## build the CLI and the server

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

# Install missing Debian packages (as root), or print the command to do so.
deps:  ## install build and test dependencies (apt-get)
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "deps: all installed"; \
	elif [ "$$(id -u)" = 0 ]; then echo "deps: installing $$missing"; \
	    (apt-get -o Acquire::Retries=5 update -qq || true) && \
	    DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=5 install -y -qq $$missing; \
	else echo "deps: missing packages; run: sudo apt-get install -y $$missing"; exit 1; fi

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The AVX-512 kernel file alone may use AVX-512; it runs only when cpuid
# says the CPU has it.
$(B)/engine/conv_avx512.o: CFLAGS += -mavx512f -mfma
# Likewise the int8 kernels, with VNNI (vpdpbusd); they run only when cpuid
# reports avx512_vnni and avx512bw.
$(B)/engine/conv_int8.o: CFLAGS += -mavx512f -mavx512bw -mavx512vnni -mavx512vl -mfma
# And the AMX tiles (tdpbusd), run only when cpuid and Linux allow them.
$(B)/engine/conv_amx.o: CFLAGS += -mavx512f -mavx512bw -mamx-tile -mamx-int8

# The ImageNet class names are compiled in, so a binary runs with no data files.
$(B)/gen/labels_data.c: engine/imagenet_labels.txt
	@mkdir -p $(dir $@)
	@{ echo '/* generated from engine/imagenet_labels.txt */'; \
	   echo 'const char eng_builtin_labels[] ='; \
	   sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$$/\\n"/' $<; \
	   echo ';'; } > $@

$(B)/gen/labels_data.o: $(B)/gen/labels_data.c
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/libengine.a: $(ENGINE_OBJ)
	ar rcs $@ $^

$(B)/imgclass: $(B)/engine/imgclass.o $(B)/libengine.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(B)/imgclassd: $(B)/server/main.o $(SERVER_OBJ) $(B)/libengine.a
	$(CC) $(CFLAGS) -o $@ $^ $(SRV_LIBS) $(LDLIBS)

# The weights downloader behind `make model`: libcurl only, not in the library.
$(B)/fetch-model: $(B)/deploy/fetch_model.o
	$(CC) $(CFLAGS) -o $@ $^ -lcurl

$(B)/tests/%: tests/%.c $(SERVER_OBJ) $(B)/libengine.a tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $< $(SERVER_OBJ) $(B)/libengine.a $(SRV_LIBS) $(TEST_LIBS) $(LDLIBS)

# Closed-loop HTTP load generator used by `make bench`.
$(B)/loadgen: tests/bench/loadgen.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(TEST_LIBS) -ljansson

# Engine, PyTorch and server side by side, in both OpenBLAS environments.
bench: check-deps all $(B)/loadgen  ## benchmark vs PyTorch; writes build/bench.json
	@B=$(B) bash tests/bench/bench.sh

# test_server drives the real binaries; test_hostile and test_soak the server.
$(B)/tests/test_server: $(B)/imgclassd $(B)/imgclass
$(B)/tests/test_hostile $(B)/tests/test_soak $(B)/tests/test_protocols \
    $(B)/tests/test_cors_auth: $(B)/imgclassd

# Reference data from torchvision: seeded random models, images, expected
# tensors and logits. Regenerated when the generator changes.
$(REF)/stamp: tests/gen_reference.py
	@mkdir -p $(REF)
	$(PY) tests/gen_reference.py --out $(REF)
	@touch $@

# PyTorch's own int8 (onednn) on the reference ResNet-50: the bar for the
# engine's int8 agreement with fp32 (tests/test_int8.c).
$(REF)/int8_stamp: tests/gen_int8_reference.py $(REF)/stamp
	$(PY) tests/gen_int8_reference.py --ref $(REF)
	@touch $@

check-deps:
	@$(MAKE) --no-print-directory deps

test: check-deps  ## install deps, build, generate torchvision references, run all tests
	@$(MAKE) --no-print-directory all $(B)/fetch-model $(TEST_BIN) $(REF)/stamp $(REF)/int8_stamp
	@IMGCLASS_REF=$(REF) IMGCLASS_BIN=$(B)/imgclass IMGCLASSD_BIN=$(B)/imgclassd \
	    IMGCLASS_FETCH=$(B)/fetch-model bash tests/run.sh $(TEST_BIN) $(TEST_SCRIPTS)

test-browser: $(B)/imgclassd  ## run only the browser test (headless Chromium)
	@IMGCLASSD_BIN=$(B)/imgclassd bash tests/run.sh tests/test_browser.sh

# The container image, built and run for real (docker, else podman as root).
test-docker: check-deps  ## build docker/Dockerfile and test the image in a container
	@IMGCLASS_REF=$(REF) bash tests/run.sh tests/test_docker.sh

# Whole suite under AddressSanitizer and UndefinedBehaviorSanitizer.
asan:  ## run the tests under ASan + UBSan (build in build/asan)
	@$(MAKE) --no-print-directory B=build/asan \
	    OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	    test

# libFuzzer targets (clang -fsanitize=fuzzer,address,undefined, built in
# build/fuzz): JPEG, multipart, safetensors, request parsing, each for
# FUZZ_SECONDS from tests/fuzz/corpus/; kept crashers in
# tests/fuzz/regressions/ are replayed by `make test` (test_fuzz_regressions).
fuzz: check-deps  ## fuzz every target for FUZZ_SECONDS (default 60) with libFuzzer
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh

# Real ImageNet weights from Hugging Face (timm), verified, with the
# preprocessing sidecar models/$(ARCH).json. Offline it says what to fetch.
model: check-deps  ## download weights for ARCH (default resnet50) into models/
	@$(MAKE) --no-print-directory $(B)/fetch-model
	$(B)/fetch-model --dir models $(ARCH)

run: check-deps all  ## start the server on port $(PORT) with models/$(ARCH).safetensors (fetched if absent)
	@if [ ! -f models/$(ARCH).safetensors ]; then \
	    $(MAKE) --no-print-directory model || { \
	    echo "run: models/$(ARCH).safetensors is missing (see above); or try the service"; \
	    echo "     with random weights: build/imgclassd --model random:$(ARCH)"; exit 1; }; fi
	$(B)/imgclassd --port $(PORT) --model models/$(ARCH).safetensors

clean:  ## remove build/
	rm -rf build

-include $(shell find $(B) -name '*.d' 2>/dev/null)
