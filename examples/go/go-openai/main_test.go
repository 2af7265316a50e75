package main

// Live tests: they run the example against the server in OPENAI_BASE_URL (default llama-server on :8080) and
// fail when nobody answers there. Set LABKIT_GO_SKIP_LIVE=1 to skip them (e.g. `go vet`-only CI).
// The 401 test needs a llama-server started with --api-key: LABKIT_KEYED_BASE_URL + LABKIT_KEYED_API_KEY.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// liveOptions are the options the example would use here, after checking the server answers.
func liveOptions(t *testing.T) Options {
	t.Helper()
	if os.Getenv("LABKIT_GO_SKIP_LIVE") == "1" {
		t.Skip("LABKIT_GO_SKIP_LIVE=1: live server tests skipped")
	}
	o, err := ParseOptions([]string{"-max-tokens", "16"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	requireServer(t, o.BaseURL, o.APIKey)
	return o
}

func requireServer(t *testing.T, baseURL, key string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, strings.TrimRight(baseURL, "/")+"/models", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("no OpenAI-compatible server at %s (%v).\nStart one (`labkit up`), point OPENAI_BASE_URL at it, "+
			"or set LABKIT_GO_SKIP_LIVE=1 to skip the live tests.", baseURL, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/models answered %s; is OPENAI_API_KEY right?", baseURL, resp.Status)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func checkUsage(t *testing.T, r Result, maxTokens int) {
	t.Helper()
	u := r.Usage
	if u.PromptTokens <= 0 || u.CompletionTokens <= 0 || u.CompletionTokens > maxTokens {
		t.Errorf("%s usage %+v: want prompt > 0 and 0 < completion <= %d", r.Mode, u, maxTokens)
	}
	if u.TotalTokens != u.PromptTokens+u.CompletionTokens {
		t.Errorf("%s usage: total %d != prompt %d + completion %d", r.Mode, u.TotalTokens, u.PromptTokens, u.CompletionTokens)
	}
	if r.FinishReason != "stop" && r.FinishReason != "length" {
		t.Errorf("%s finish_reason %q, want stop or length", r.Mode, r.FinishReason)
	}
}

func TestChat(t *testing.T) {
	o := liveOptions(t)
	r, err := Chat(ctx(t), NewClient(o.BaseURL, o.APIKey), o)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(r.Content) == "" {
		t.Errorf("empty reply: %+v", r)
	}
	checkUsage(t, r, o.MaxTokens)
}

func TestStreamMatchesChat(t *testing.T) {
	o := liveOptions(t)
	client := NewClient(o.BaseURL, o.APIKey)
	var deltas []string
	s, err := Stream(ctx(t), client, o, func(d string) { deltas = append(deltas, d) })
	if err != nil {
		t.Fatal(err)
	}
	if len(deltas) < 2 || strings.Join(deltas, "") != s.Content {
		t.Errorf("want several deltas that join to the content; got %d deltas, content %q", len(deltas), s.Content)
	}
	checkUsage(t, s, o.MaxTokens) // needs stream_options.include_usage
	c, err := Chat(ctx(t), client, o)
	if err != nil {
		t.Fatal(err)
	}
	// Same prompt, seed and (near-)zero temperature: the same tokens, streamed or not.
	if s.Usage.CompletionTokens != c.Usage.CompletionTokens || s.FinishReason != c.FinishReason {
		t.Errorf("stream %+v and chat %+v differ", s, c)
	}
}

func TestRunJSON(t *testing.T) {
	o := liveOptions(t)
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
		checkUsage(t, r, 8)
		modes = append(modes, r.Mode)
	}
	if strings.Join(modes, ",") != "stream,chat" {
		t.Errorf("modes %v, want stream then chat (model %s)", modes, o.Model)
	}
}

func TestUnreachableServerIsAnError(t *testing.T) {
	var out, errOut bytes.Buffer
	err := Run(context.Background(), []string{"-base-url", "http://127.0.0.1:9/v1", "-timeout", "5s"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "is the server up?") {
		t.Fatalf("want an error that says what to do, got %v", err)
	}
}

// TestSeedConfigHeaders shows what the seed's DefaultAnthropicConfig puts on the wire, next to DefaultConfig.
func TestSeedConfigHeaders(t *testing.T) {
	var seen []*http.Request // the two calls below run one after the other
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r)
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":{"message":"Invalid API Key","type":"authentication_error","code":401}}`))
	}))
	defer srv.Close()
	o := Options{BaseURL: srv.URL + "/v1", APIKey: "sk-secret", Model: DefaultModel, Prompt: "hi", MaxTokens: 1}
	for _, client := range []*openai.Client{NewSeedClient(o.BaseURL, o.APIKey), NewClient(o.BaseURL, o.APIKey)} {
		if _, err := client.CreateChatCompletion(ctx(t), Request(o)); err == nil {
			t.Fatal("the recorder answers 401; want an error")
		}
	}
	if len(seen) != 2 {
		t.Fatalf("want 2 requests, saw %d", len(seen))
	}
	seed, correct := seen[0], seen[1]
	if got := seed.Header.Get("Authorization"); got != "" {
		t.Errorf("seed config sent Authorization %q", got)
	}
	if seed.URL.Query().Get("api-version") == "" || seed.Header.Get("anthropic-version") == "" {
		t.Errorf("seed config: want ?api-version and anthropic-version header, got %s %v", seed.URL, seed.Header)
	}
	if got := correct.Header.Get("Authorization"); got != "Bearer sk-secret" {
		t.Errorf("DefaultConfig sent Authorization %q", got)
	}
	if correct.URL.RawQuery != "" {
		t.Errorf("DefaultConfig added a query: %s", correct.URL)
	}
}

// TestSeedConfigAgainstKeyedServer provokes the seed's bug on a real llama-server started with --api-key.
func TestSeedConfigAgainstKeyedServer(t *testing.T) {
	base, key := os.Getenv("LABKIT_KEYED_BASE_URL"), os.Getenv("LABKIT_KEYED_API_KEY")
	if base == "" || key == "" {
		t.Skip("set LABKIT_KEYED_BASE_URL and LABKIT_KEYED_API_KEY (a llama-server with --api-key) to run this")
	}
	requireServer(t, base, key)
	o := Options{BaseURL: base, APIKey: key, Model: DefaultModel, Prompt: "你好", MaxTokens: 4, SeedConfig: true}
	_, err := Chat(ctx(t), NewSeedClient(base, key), o)
	var apiErr *openai.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != http.StatusUnauthorized {
		t.Fatalf("seed config against --api-key: want a 401 APIError, got %v", err)
	}
	if !strings.Contains(err.Error(), "DefaultAnthropicConfig sends no Authorization header") {
		t.Errorf("the error should say why: %v", err)
	}
	o.SeedConfig = false
	r, err := Chat(ctx(t), NewClient(base, key), o)
	if err != nil {
		t.Fatalf("DefaultConfig with the right key should work: %v", err)
	}
	checkUsage(t, r, o.MaxTokens)
}
