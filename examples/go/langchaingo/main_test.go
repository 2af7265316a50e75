package main

// Live tests: they run the example against the server in OPENAI_BASE_URL (default llama-server on :8080) and
// fail when nobody answers there. Set LABKIT_GO_SKIP_LIVE=1 to skip them (e.g. `go vet`-only CI).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tmc/langchaingo/llms"
)

func liveOptions(t *testing.T, args ...string) Options {
	t.Helper()
	if os.Getenv("LABKIT_GO_SKIP_LIVE") == "1" {
		t.Skip("LABKIT_GO_SKIP_LIVE=1: live server tests skipped")
	}
	o, err := ParseOptions(append([]string{"-max-tokens", "16"}, args...), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, strings.TrimRight(o.BaseURL, "/")+"/models", nil)
	req.Header.Set("Authorization", "Bearer "+o.APIKey)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("no OpenAI-compatible server at %s (%v).\nStart one (`labkit up`), point OPENAI_BASE_URL at it, "+
			"or set LABKIT_GO_SKIP_LIVE=1 to skip the live tests.", o.BaseURL, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/models answered %s; is OPENAI_API_KEY right?", o.BaseURL, resp.Status)
	}
	return o
}

// isOllama: Ollama answers /api/version at the server root; llama-server does not.
func isOllama(baseURL string) bool {
	root := strings.TrimSuffix(strings.TrimRight(baseURL, "/"), "/v1")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(root + "/api/version")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var v struct{ Version string }
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&v) == nil && v.Version != ""
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func checkResult(t *testing.T, r Result, maxTokens int) {
	t.Helper()
	if strings.TrimSpace(r.Content) == "" {
		t.Errorf("%s: empty content", r.Mode)
	}
	if r.PromptTokens <= 0 || r.CompletionTokens <= 0 || r.CompletionTokens > maxTokens {
		t.Errorf("%s usage %+v: want prompt > 0 and 0 < completion <= %d", r.Mode, r, maxTokens)
	}
	if r.TotalTokens != r.PromptTokens+r.CompletionTokens {
		t.Errorf("%s usage: total %d != prompt + completion", r.Mode, r.TotalTokens)
	}
	if r.StopReason != "stop" && r.StopReason != "length" {
		t.Errorf("%s finish_reason %q, want stop or length", r.Mode, r.StopReason)
	}
}

func TestGenerateContent(t *testing.T) {
	o := liveOptions(t)
	llm, err := NewLLM(o)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Generate(ctx(t), llm, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, r, o.MaxTokens)
}

func TestStreamingFuncMatchesGenerate(t *testing.T) {
	o := liveOptions(t)
	llm, err := NewLLM(o)
	if err != nil {
		t.Fatal(err)
	}
	var chunks []string
	s, err := Generate(ctx(t), llm, o, func(c string) { chunks = append(chunks, c) })
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) < 2 || strings.Join(chunks, "") != s.Content {
		t.Errorf("want several chunks that join to the content; got %d, content %q", len(chunks), s.Content)
	}
	checkResult(t, s, o.MaxTokens) // langchaingo asks for stream_options.include_usage itself
	c, err := Generate(ctx(t), llm, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.CompletionTokens != s.CompletionTokens || c.StopReason != s.StopReason {
		t.Errorf("greedy + seeded: stream %+v and chat %+v should agree", s, c)
	}
}

func TestRunJSON(t *testing.T) {
	liveOptions(t)
	var out, errOut bytes.Buffer
	if err := Run(ctx(t), []string{"-json", "-max-tokens", "8"}, &out, &errOut); err != nil {
		t.Fatalf("Run: %v\n%s", err, errOut.String())
	}
	var modes []string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var r Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("not JSON: %q", sc.Text())
		}
		checkResult(t, r, 8)
		modes = append(modes, r.Mode)
	}
	if strings.Join(modes, ",") != "chat,stream" {
		t.Errorf("modes %v, want chat then stream", modes)
	}
}

// TestTokenLimitField: llama-server honours both fields; Ollama ignores max_completion_tokens (langchaingo's
// default), so only WithLegacyMaxTokensField keeps the limit there. We stream and hang up once more chunks
// than the limit arrived, so an ignored limit costs a few tokens, not a whole context of them.
func TestTokenLimitField(t *testing.T) {
	const limit = 4
	o := liveOptions(t, "-prompt", "What is 2+2?", "-max-tokens", "4")
	llm, err := NewLLM(o)
	if err != nil {
		t.Fatal(err)
	}
	errIgnored := errors.New("more chunks than the limit: the server ignored it")
	chunks := map[string]int{}
	results := map[string]error{}
	for _, field := range []string{"max_tokens", "max_completion_tokens"} {
		o.MaxTokensField = field
		// Stop at the first full stop too: if the limit is ignored, the answer still ends within a sentence.
		opts := append(CallOptions(o), llms.WithStopWords([]string{"."}), llms.WithStreamingFunc(func(_ context.Context, c []byte) error {
			if len(c) > 0 { // the first (role) and last (finish) chunks carry no text
				chunks[field]++
			}
			if chunks[field] > limit+2 {
				return errIgnored
			}
			return nil
		}))
		msgs := []llms.MessageContent{llms.TextParts(llms.ChatMessageTypeHuman, o.Prompt)}
		_, results[field] = llm.GenerateContent(ctx(t), msgs, opts...)
	}
	if results["max_tokens"] != nil || chunks["max_tokens"] > limit {
		t.Errorf("max_tokens=%d not honoured: %d chunks, err %v", limit, chunks["max_tokens"], results["max_tokens"])
	}
	ignored := errors.Is(results["max_completion_tokens"], errIgnored)
	if isOllama(o.BaseURL) != ignored {
		t.Errorf("max_completion_tokens=%d: ignored=%v (%d chunks, err %v); want ignored only by Ollama",
			limit, ignored, chunks["max_completion_tokens"], results["max_completion_tokens"])
	}
	t.Logf("max_tokens → %d chunks; max_completion_tokens → %d chunks (ignored: %v)",
		chunks["max_tokens"], chunks["max_completion_tokens"], ignored)
}

func TestUnreachableServerIsAnError(t *testing.T) {
	var out, errOut bytes.Buffer
	err := Run(context.Background(), []string{"-base-url", "http://127.0.0.1:9/v1", "-timeout", "5s"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "is the server up") {
		t.Fatalf("want an error that says what to do, got %v", err)
	}
}

func TestBadFlagsAreErrors(t *testing.T) {
	for _, args := range [][]string{{"-mode", "x"}, {"-max-tokens", "0"}, {"-max-tokens-field", "n_predict"}} {
		if _, err := ParseOptions(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%v: want an error", args)
		}
	}
}
